"""DDP training throughput over the kpt backend vs plain gloo, on cpu, measured in one run.

Two rank processes hold two DistributedDataParallel copies of the same MLP: one on a gloo
group, one on a kpt group (gloo inside, on cpu tensors). They train step by step in turn, in
ABBA order, so the load of a shared machine falls on both alike; the ratio of their median
step times is the kpt backend's overhead. Each rank times its own steps; rank 0 prints.

    python benchmarks/bench_ddp.py [--steps 200] [--width 512] [--depth 4] [--batch 64]
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

WARMUP_STEPS = 5


def make_ddp(args: argparse.Namespace, group: dist.ProcessGroup):
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(args.depth):
        layers += [torch.nn.Linear(args.width, args.width), torch.nn.ReLU()]
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(*layers), process_group=group
    )
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def rank_main(rank: int, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{args.folder}/store", rank=rank,
                            world_size=args.world, timeout=timedelta(seconds=120))  # fmt: skip
    groups = {"gloo": dist.group.WORLD, "kpt": dist.new_group(backend="kpt")}
    runs = {name: make_ddp(args, group) for name, group in groups.items()}
    x, y = torch.randn(args.batch, args.width), torch.randn(args.batch, args.width)
    times: dict[str, list[float]] = {name: [] for name in runs}

    def step(name: str) -> None:
        model, optimizer = runs[name]
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        times[name].append(time.perf_counter() - start)

    order = ("gloo", "kpt", "kpt", "gloo")  # ABBA: neither is always first after the other
    for i in range(WARMUP_STEPS * 2 + args.steps * 2):
        step(order[i % 4])
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        kept = {name: t[WARMUP_STEPS:] for name, t in times.items()}
        print("RESULT " + json.dumps(kept), flush=True)


def run(args: argparse.Namespace) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="kpt-bench-ddp-") as folder:
        common = ["--folder", folder, "--world", str(args.world), "--steps", str(args.steps),
                  "--width", str(args.width), "--depth", str(args.depth),
                  "--batch", str(args.batch)]  # fmt: skip
        procs = [subprocess.Popen(
            [sys.executable, __file__, "--rank", str(r), *common],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        ) for r in range(args.world)]  # fmt: skip
        try:
            outputs = [p.communicate(timeout=900)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"a rank failed:\n{out[-3000:]}")
    line = next(x for x in outputs[0].splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per backend")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="samples per rank")
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args.rank, args)
        return
    times = run(args)
    print(f"DDP, {args.world} cpu ranks, MLP {args.depth}x{args.width}, batch {args.batch}/rank, "
          f"{args.steps} steps per backend, interleaved ABBA (rank 0's step times)")  # fmt: skip
    print(f"{'backend':<8}{'median ms':>11}{'p10 ms':>9}{'p90 ms':>9}{'steps/s':>10}")
    medians = {}
    for name, values in times.items():
        deciles = statistics.quantiles(values, n=10)
        medians[name] = statistics.median(values)
        print(f"{name:<8}{medians[name] * 1e3:>11.2f}{deciles[0] * 1e3:>9.2f}"
              f"{deciles[-1] * 1e3:>9.2f}{1 / medians[name]:>10.2f}")  # fmt: skip
    print(f"kpt / gloo throughput (median step): {medians['gloo'] / medians['kpt']:.3f}")
    total = {name: sum(values) for name, values in times.items()}
    print(f"kpt / gloo throughput (total time):  {total['gloo'] / total['kpt']:.3f}")


if __name__ == "__main__":
    main()
