"""tune_ddp's choice against DDP's defaults, on a fast and a slow simulated network.

Two ranks on two simulated H100s of one daemon train the same MLP with DistributedDataParallel:
once with DDP's defaults (25 MB buckets, no compression), once with what
`kpt.collectives.tune_ddp` picks from the measured links. "fast" is the chips' own NVLink;
"slow" is that link degraded to 1/1000 of its bandwidth (a fault injected in the daemon, about
0.45 GB/s, a slow Ethernet). Step times are simulated (device events), median of the timed
steps, both runs in the same job; the ratio is default / tuned.

    python benchmarks/bench_tune_ddp.py [--steps 4] [--width 1024] [--depth 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from kpt.collectives._hetero import wait_in_lockstep

RESULT_PREFIX = "KPT-TUNE-RESULT "
NETWORKS = {"fast": None, "slow": [{"kind": "link_degraded", "link": [0, 1], "factor": 0.001}]}
WARM_STEPS = 3  # PowerSGD starts compressing at its iteration 2


def make_model(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(args.depth):
        layers += [torch.nn.Linear(args.width, args.width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).to("kpt_sim")


def step_times(model: torch.nn.Module, args: argparse.Namespace) -> list[float]:
    """Simulated seconds of each timed training step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(args.batch, args.width).to("kpt_sim")
    y = torch.randn(args.batch, args.width).to("kpt_sim")
    times = []
    for index in range(WARM_STEPS + args.steps):
        start = torch.kpt_sim.Event(enable_timing=True)
        end = torch.kpt_sim.Event(enable_timing=True)
        start.record()
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        end.record()
        wait_in_lockstep(end)
        if index >= WARM_STEPS:
            times.append(start.elapsed_time(end) / 1e3)
    return times


def backward_seconds(args: argparse.Namespace) -> float:
    """One local backward's simulated time: what DDP's sync can hide behind."""
    model = make_model(args)
    x = torch.randn(args.batch, args.width).to("kpt_sim")
    loss = model(x).square().mean()
    start, end = torch.kpt_sim.Event(enable_timing=True), torch.kpt_sim.Event(enable_timing=True)
    start.record()
    loss.backward()
    end.record()
    wait_in_lockstep(end)
    return start.elapsed_time(end) / 1e3


def rank_main(rank: int, args: argparse.Namespace) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(args.limit_s - 30)  # where a hung rank waits
    import kpt.adapters.sim  # noqa: F401  (registers kpt_sim)
    from kpt.collectives import DdpChoice, tune_ddp  # (registers the backend)

    dist.init_process_group("kpt", init_method=f"file://{args.folder}/store", rank=rank,
                            world_size=2, timeout=timedelta(seconds=300))  # fmt: skip
    backward_s = backward_seconds(args)
    choice = tune_ddp(make_model(args), backward_s=backward_s)
    runs = {"default": DdpChoice(25.0, "none", 0.0), "tuned": choice}
    medians = {name: statistics.median(step_times(c.wrap(make_model(args)), args))
               for name, c in runs.items()}  # fmt: skip
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        result = {
            "choice": {"bucket_cap_mb": choice.bucket_cap_mb, "compression": choice.compression},
            "predicted_sync_ms": choice.predicted_s * 1e3,
            "backward_ms": backward_s * 1e3,
            "default_step_ms": medians["default"] * 1e3,
            "tuned_step_ms": medians["tuned"] * 1e3,
            "table": choice.table(),
            "candidates": [list(c) for c in choice.candidates],  # (MB, compression, seconds)
        }
        print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_network(name: str, args: argparse.Namespace) -> dict:
    """Start a daemon for the network, two ranks on it; rank 0's result."""
    import kpt.sim

    with tempfile.TemporaryDirectory(prefix="kpt-tune-") as folder:
        faults = None
        if NETWORKS[name] is not None:
            faults = Path(folder) / "faults.json"
            faults.write_text(json.dumps({"faults": NETWORKS[name]}))
        handle = kpt.sim.start_daemon(profile="h100-sxm", devices=2, executor="torch",
                                      faults=faults)  # fmt: skip
        try:
            outputs = _run_ranks(args, folder, handle.endpoint)
        finally:
            handle.stop()
    for line in outputs[0].splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"network {name}: rank 0 printed no result:\n{outputs[0][-3000:]}")


def _run_ranks(args: argparse.Namespace, folder: str, endpoint: str) -> list[str]:
    command = [sys.executable, __file__, "--folder", folder, *_shape_args(args)]
    env = dict(os.environ, KPT_SIM_ENDPOINT=endpoint, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([*command, "--rank", str(r)], text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env={**env, "KPT_SIM_VISIBLE_DEVICES": str(r)})
        for r in range(2)
    ]  # fmt: skip
    try:
        outputs = [p.communicate(timeout=args.limit_s)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        tails = "\n".join(f"rank {r}:\n{p.communicate()[0][-3000:]}" for r, p in enumerate(procs))
        raise RuntimeError(f"ranks still running after {args.limit_s:.0f} s:\n{tails}") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        if p.returncode != 0:
            raise RuntimeError(f"rank {rank} exited {p.returncode}:\n{out[-3000:]}")
    return outputs


def _shape_args(args: argparse.Namespace) -> list[str]:
    return ["--steps", str(args.steps), "--width", str(args.width), "--depth", str(args.depth),
            "--batch", str(args.batch)]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--limit-s", type=float, default=600.0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank is not None:
        rank_main(args.rank, args)
        return 0
    results = {name: run_network(name, args) for name in NETWORKS}
    print(f"MLP {args.depth} x {args.width}, batch {args.batch}, 2 ranks on simulated H100s")
    print("| network | tune_ddp's choice | default step ms | tuned step ms | default / tuned |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        c = r["choice"]
        print(f"| {name} | {c['bucket_cap_mb']:g} MB, {c['compression']} | "
              f"{r['default_step_ms']:.3f} | {r['tuned_step_ms']:.3f} | "
              f"{r['default_step_ms'] / r['tuned_step_ms']:.2f}x |")  # fmt: skip
    for name, r in results.items():
        print(f"\n{name}: backward {r['backward_ms']:.3f} ms; candidates\n{r['table']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
