"""Where the host's time goes in steady decode: cProfile over the engine's steps once every
request decodes (128-token prompts, then --new tokens each), the top functions by own time.

    python benchmarks/profile_decode.py --device cuda --batch 256     # on a GPU machine
    python benchmarks/profile_decode.py --device cpu --batch 64 --tiny  # anywhere
    ... --kind final_only    # the requests' output kind: cumulative (default), delta, final_only

With chained decode steps (CUDA), a step's host work overlaps the forward of the next one, so
host time above the forward's is what the step loses.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import tempfile
from pathlib import Path

import torch

from kpt.serve import LLM, SamplingParams


def make_gpt2(folder: Path, tiny: bool) -> Path:
    import transformers

    torch.manual_seed(0)
    size = dict(n_layer=1, n_embd=32, n_head=2) if tiny else dict(n_layer=12, n_embd=768, n_head=12)
    config = transformers.GPT2Config(n_positions=1024, **size)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--new", type=int, default=128, help="tokens each request generates")
    parser.add_argument("--tiny", action="store_true", help="a 1-layer, 32-wide model")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--kind", default="cumulative", choices=["cumulative", "delta", "final_only"],
        help="the requests' output kind (SamplingParams.output_kind)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.device == "cuda":
        from bench_engine_gpu import ensure_cuda_adapter

        ensure_cuda_adapter()
    model = make_gpt2(Path(tempfile.mkdtemp()) / "gpt2", args.tiny)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    llm = LLM(model, device=args.device, dtype=dtype, max_num_seqs=args.batch)
    engine = llm.engine
    params = SamplingParams(
        max_tokens=args.new, temperature=0.0, ignore_eos=True, output_kind=args.kind
    )
    rng = random.Random(0)
    for warm in (True, False):  # the first round captures the graphs of the buckets used
        for _ in range(args.batch):
            engine.add_request([rng.randrange(50_000) for _ in range(128)], params)
        while engine.scheduler.waiting or not all(
            r.output_token_ids for r in engine.scheduler.running
        ):
            engine.step()  # until every request decodes
        if warm:
            while engine.has_unfinished:
                engine.step()
    profile = cProfile.Profile()
    profile.enable()
    steps = 0
    while engine.has_unfinished:
        engine.step()
        steps += 1
    profile.disable()
    stats = pstats.Stats(profile)
    print(f"# {steps} decode steps at batch {args.batch} on {args.device}: "
          f"{stats.total_tt / steps * 1e3:.2f} ms of profiled host time a step")  # fmt: skip
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
