"""What captured step graphs save on a simulated chip: the same engine and requests, each step
dispatched op by op (the baseline, timed as the replay it stands for) against steps replaying
graphs captured per shape (torch.kpt_sim.Graph). Wall time per step is this host's cost of
simulating the step; TPOT is the chip's simulated time, which must not change.

    KPT_SIM_NUMERICS=0 python benchmarks/bench_sim_step_graphs.py [--layers 32] [--batch 16]

A model of Llama-3-8B's shape (random weights, bf16, timing-only: no values, no host memory
for weights) on the h200 profile. Both runs share this process's daemon and take turns, so
machine noise hits them alike; the ratio is the figure to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KPT_SIM_PROFILE", "h200")
os.environ.setdefault("KPT_SIM_NUMERICS", "0")

import torch
from bench_sim_vs_gpu import LLAMA_8B

import kpt.adapters.sim  # noqa: F401  (the kpt_sim device)
from kpt.serve import LLM, SamplingParams


def engine(folder: Path, graphs: bool, batch: int) -> LLM:
    llm = LLM(folder, device="kpt_sim", dtype=torch.bfloat16, load_format="dummy",
              max_num_seqs=batch, num_kv_blocks=2048, max_model_len=1024)  # fmt: skip
    if not graphs:
        llm.engine.runner.step_graphs = None  # op by op, still timed as a replay
    return llm


def run(llm: LLM, batch: int, prompt: int, output: int, seed: int) -> tuple[float, float]:
    """(wall seconds per step, median simulated TPOT ms) of one batch of requests."""
    vocab = llm.engine.model_config.vocab_size
    prompts = [[(seed * 7919 + r * 131 + i) % (vocab - 1) + 1 for i in range(prompt)]
               for r in range(batch)]  # fmt: skip
    params = SamplingParams(max_tokens=output, temperature=0.0, ignore_eos=True)
    steps = llm.engine.stats().num_steps
    wall = time.perf_counter()
    outs = llm.generate(prompts, params)
    wall = time.perf_counter() - wall
    steps = llm.engine.stats().num_steps - steps
    tpot = statistics.median((o.latency_ms - o.ttft_ms) / (len(o.token_ids) - 1) for o in outs)
    return wall / steps, tpot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--output", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp()) / "llama-8b-shape"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**LLAMA_8B, "num_hidden_layers": args.layers}))
    llms = {"op by op (baseline)": engine(folder, False, args.batch),
            "captured graphs": engine(folder, True, args.batch)}  # fmt: skip
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in llms}
    for repeat in range(args.repeats + 1):  # the first round warms up (and captures)
        for name, llm in llms.items():
            result = run(llm, args.batch, args.prompt, args.output, seed=repeat)
            if repeat:
                figures[name].append(result)
    print(f"# Llama-3-8B shape, {args.layers} layers, h200 timing-only, batch {args.batch}, "
          f"{args.prompt} in / {args.output} out, {args.repeats} rounds")  # fmt: skip
    print("| steps | wall ms per step (median) | simulated TPOT ms (median) |")
    print("|---|---|---|")
    medians = {}
    for name, results in figures.items():
        wall = statistics.median(w for w, _ in results) * 1e3
        tpot = statistics.median(t for _, t in results)
        medians[name] = (wall, tpot)
        print(f"| {name} | {wall:.1f} | {tpot:.3f} |")
    (base_wall, base_tpot), (wall, tpot) = medians.values()
    print(f"\nwall per step: {base_wall / wall:.1f}x faster with captured graphs; "
          f"simulated TPOT ratio {tpot / base_tpot:.4f} (1 = unchanged)")  # fmt: skip
    graphs = llms["captured graphs"].engine.runner.step_graphs
    print(f"graphs captured {graphs.captures}, replays {graphs.replays}")


if __name__ == "__main__":
    main()
