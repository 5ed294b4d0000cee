"""What DDP adds to a training step on one simulated chip, before any communication.

The demo's pair (bench_hetero.py) loses a few percent against each chip trained alone on its
share of the batch. This measures the part that is DDP's own per-step device and host work, with
a world of one (the all-reduce has no peer to wait for or link to cross): the demo's MLP alone,
then under DDP as the demo wraps it (`_hetero.wrap_ddp`, the batch-weighted hook), then with
DDP's default hook. Simulated step times, one daemon, in one run.

    python benchmarks/bench_ddp_one_chip.py [--chip mi300x] [--batch 5761] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch.distributed as dist

import kpt.sim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chip", default="mi300x")
    parser.add_argument("--batch", type=int, default=5761, help="the chip's share in the demo")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    daemon = kpt.sim.start_daemon(profile=f"{args.chip}:1", devices=1, numerics=False)
    os.environ["KPT_SIM_ENDPOINT"] = daemon.endpoint
    try:
        rows = measure(args.batch, args.steps)
    finally:
        daemon.stop()
    print(f"{args.chip}, MLP 4x4096, batch {args.batch}, simulated ms per step (timing only)")
    base = rows[0][1]
    print(f"{'setting':<48}{'step ms':>9}{'vs alone':>10}")
    for name, ms in rows:
        print(f"{name:<48}{ms:>9.3f}{ms / base:>10.3f}")


def measure(batch: int, steps: int) -> list[tuple[str, float]]:
    import kpt.adapters.sim  # registers kpt_sim
    import kpt.collectives  # noqa: F401  (registers "kpt")
    from kpt.collectives._hetero import HeteroJob, _make_model, _timed_steps, wrap_ddp
    from kpt.collectives._placement import batch_weighted_hook

    folder = tempfile.mkdtemp(prefix="kpt-ddp-one-chip-")
    dist.init_process_group("kpt", init_method=f"file://{folder}/store", rank=0, world_size=1)
    job = HeteroJob(steps=steps)
    rows = [("alone", _timed_steps(job, _make_model(job), batch) * 1e3)]
    for name, hook in (
        ("DDP as in the demo (weighted hook)", True),
        ("DDP, its default hook", False),
    ):
        ddp = wrap_ddp(_make_model(job))
        if hook:
            ddp.register_comm_hook(1.0, batch_weighted_hook)
        rows.append((name, _timed_steps(job, ddp, batch) * 1e3))
    dist.destroy_process_group()
    return rows


if __name__ == "__main__":
    main()
