"""DDP training throughput over the kpt backend vs plain gloo, on cpu, measured in one run.

Two rank processes train the same MLP with DistributedDataParallel; the run alternates gloo and
kpt (ABAB...) so machine load hits both alike, and prints steps/s per run and kpt / gloo.
The kpt backend on cpu tensors runs gloo inside: the ratio is its overhead.

    python benchmarks/bench_ddp.py [--rounds 3] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist

import kpt.collectives  # noqa: F401  (registers "kpt")

WIDTH, DEPTH, BATCH = 512, 4, 64


def rank_main(rank: int, world: int, backend: str, steps: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"file://{folder}/store", rank=rank,
                            world_size=world, timeout=timedelta(seconds=120))  # fmt: skip
    torch.manual_seed(0)
    layers = []
    for _ in range(DEPTH):
        layers += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU()]
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(*layers))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(BATCH, WIDTH), torch.randn(BATCH, WIDTH)

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()

    for _ in range(3):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    dist.destroy_process_group()
    if rank == 0:
        print("RESULT " + json.dumps({"steps_per_s": steps / elapsed}), flush=True)


def run(backend: str, steps: int, world: int = 2) -> float:
    with tempfile.TemporaryDirectory(prefix="kpt-bench-ddp-") as folder:
        procs = [subprocess.Popen(
            [sys.executable, __file__, "--rank", str(r), "--backend", backend,
             "--steps", str(steps), "--folder", folder, "--world", str(world)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        ) for r in range(world)]  # fmt: skip
        try:
            outputs = [p.communicate(timeout=600)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"{backend} rank failed:\n{out[-3000:]}")
    line = next(x for x in outputs[0].splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int)
    parser.add_argument("--backend")
    parser.add_argument("--folder")
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args.rank, args.world, args.backend, args.steps, args.folder)
        return
    results: dict[str, list[float]] = {"gloo": [], "kpt": []}
    for _ in range(args.rounds):
        for backend in ("gloo", "kpt"):
            results[backend].append(run(backend, args.steps))
    gloo, kpt = statistics.median(results["gloo"]), statistics.median(results["kpt"])
    print(f"DDP, 2 cpu ranks, MLP {DEPTH}x{WIDTH}, batch {BATCH}/rank, {args.steps} steps, "
          f"{args.rounds} rounds (median)")  # fmt: skip
    print(f"{'backend':<10}{'steps/s':>10}   runs")
    for name, value in (("gloo", gloo), ("kpt", kpt)):
        runs = ", ".join(f"{v:.1f}" for v in results[name])
        print(f"{name:<10}{value:>10.2f}   {runs}")
    print(f"kpt / gloo: {kpt / gloo:.3f}")


if __name__ == "__main__":
    main()
