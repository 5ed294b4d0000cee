"""Where a decode step's device time goes: torch.profiler's kernel totals over a few steady
decode steps of a Llama-3-8B-shaped model (random weights, bf16), by kernel name.

    python benchmarks/profile_decode_kernels.py --device cuda --batch 64
    KPT_SIM_PROFILE=h200 KPT_SIM_NUMERICS=0 \\
        python benchmarks/profile_decode_kernels.py --device kpt_sim --batch 64

Compares what the GPU runs (CUDA graphs, the Triton paged-attention kernel) with what kpt_sim
charges for the engine's path there, kernel by kernel.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from kpt.serve import LLM, SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    from bench_sim_vs_gpu import LLAMA_8B

    if args.device.startswith("cuda"):
        from bench_engine_gpu import ensure_cuda_adapter

        ensure_cuda_adapter()
        activity = ProfilerActivity.CUDA
    else:
        import kpt.adapters.sim  # noqa: F401

        activity = ProfilerActivity.PrivateUse1
    folder = Path(tempfile.mkdtemp())
    (folder / "config.json").write_text(json.dumps(LLAMA_8B))
    llm = LLM(folder, device=args.device, dtype=torch.bfloat16, load_format="dummy",
              max_num_seqs=args.batch, num_kv_blocks=4096, max_model_len=2048,
              async_decode=False)  # fmt: skip
    engine = llm.engine
    params = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
    for r in range(args.batch):
        engine.add_request([1 + (r * 131 + i) % 100_000 for i in range(512)], params)
    while engine.scheduler.waiting or not all(r.output_token_ids for r in engine.scheduler.running):
        engine.step()  # until every request decodes
    for _ in range(3):
        engine.step()
    with profile(activities=[activity]) as prof:
        for _ in range(args.steps):
            engine.step()
    totals: collections.Counter = collections.Counter()
    for event in prof.key_averages():
        own = getattr(event, "self_device_time_total", 0) or 0
        if own > 0:
            totals[event.key] += own
    total = sum(totals.values())
    print(f"# {args.device}, batch {args.batch}: {total / args.steps / 1e3:.2f} ms of kernels a "
          f"decode step ({args.steps} steps)")  # fmt: skip
    print("| kernel | ms a step | share |")
    print("|---|---|---|")
    for name, us in totals.most_common(args.top):
        print(f"| {name[:70]} | {us / args.steps / 1e3:.3f} | {us / total:.1%} |")


if __name__ == "__main__":
    main()
