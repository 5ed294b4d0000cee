"""Heterogeneous data parallelism on simulated chips: h100-sxm + mi300x with split_batch.

One daemon serves both chips (values computed on this host, time simulated).
First each chip trains alone on the global batch (samples per simulated second); then two DDP
ranks, one per chip, train with split_batch from those throughputs and the batch-weighted hook.
Efficiency = the pair's throughput / the sum of the single-chip throughputs (HexiScale reports
within 3.5 % of a homogeneous cluster).

    python benchmarks/bench_hetero.py [--batch 512] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import timedelta

import torch
import torch.distributed as dist

import kpt.collectives  # registers "kpt"
import kpt.sim

WIDTH, DEPTH = 1024, 4
PROFILE = "h100-sxm:1,mi300x:1"


def make_model() -> torch.nn.Module:
    layers = []
    for _ in range(DEPTH):
        layers += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


def rank_main(rank: int, world: int, sizes: list[int], steps: int, folder: str) -> None:
    import kpt.adapters.sim  # registers kpt_sim

    model = make_model().to("kpt_sim")
    if world > 1:
        dist.init_process_group("kpt", init_method=f"file://{folder}/store", rank=rank,
                                world_size=world, timeout=timedelta(seconds=300))  # fmt: skip
        model = torch.nn.parallel.DistributedDataParallel(model)
        model.register_comm_hook(sizes[rank] / sum(sizes), kpt.collectives.batch_weighted_hook)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(sizes[rank], WIDTH).to("kpt_sim")
    y = torch.randn(sizes[rank], WIDTH).to("kpt_sim")

    def step() -> None:
        optimizer.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        optimizer.step()

    step()  # warm: buckets built, buffers cached
    start, end = torch.kpt_sim.Event(enable_timing=True), torch.kpt_sim.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / steps
    if world > 1:
        dist.destroy_process_group()
    print("RESULT " + json.dumps({"step_s": seconds}), flush=True)


def run(endpoint: str, devices: list[int], sizes: list[int], steps: int) -> list[float]:
    """Simulated seconds per step of each rank (one process per device)."""
    with tempfile.TemporaryDirectory(prefix="kpt-bench-hetero-") as folder:
        procs = [subprocess.Popen(
            [sys.executable, __file__, "--rank", str(r), "--world", str(len(devices)),
             "--sizes", ",".join(map(str, sizes)), "--steps", str(steps), "--folder", folder],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, KPT_SIM_ENDPOINT=endpoint, KPT_SIM_VISIBLE_DEVICES=str(d),
                     OMP_NUM_THREADS="1"),
        ) for r, d in enumerate(devices)]  # fmt: skip
        try:
            outputs = [p.communicate(timeout=900)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    times = []
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"rank failed (exit {p.returncode}):\n{out[-6000:]}")
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        times.append(json.loads(line[len("RESULT ") :])["step_s"])
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--sizes")
    parser.add_argument("--folder")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    if args.rank is not None:
        sizes = [int(s) for s in args.sizes.split(",")]
        rank_main(args.rank, args.world, sizes, args.steps, args.folder)
        return
    daemon = kpt.sim.start_daemon(profile=PROFILE, devices=2, executor="torch")
    try:
        alone = [run(daemon.endpoint, [d], [args.batch], args.steps)[0] for d in (0, 1)]
        speeds = [args.batch / t for t in alone]
        sizes = kpt.collectives.split_batch(args.batch, speeds)
        pair = run(daemon.endpoint, [0, 1], sizes, args.steps)
    finally:
        daemon.stop()
    step = max(pair)
    together = args.batch / step
    print(f"MLP {DEPTH}x{WIDTH}, global batch {args.batch}, simulated time")
    print(f"{'run':<28}{'batch':>12}{'step ms':>10}{'samples/s':>12}")
    for name, t, s in (("h100-sxm alone", alone[0], speeds[0]),
                       ("mi300x alone", alone[1], speeds[1])):  # fmt: skip
        print(f"{name:<28}{args.batch:>12}{t * 1e3:>10.2f}{s:>12.0f}")
    split = "+".join(map(str, sizes))
    print(f"{'DDP h100-sxm + mi300x':<28}{split:>12}{step * 1e3:>10.2f}{together:>12.0f}")
    print(f"efficiency (pair / sum of singles): {together / sum(speeds):.3f}")


if __name__ == "__main__":
    main()
