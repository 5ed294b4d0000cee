"""kpt_sim op traces of whole steps and host programs: what the simulator replays.

Runs a callable on the kpt_sim device (timing only: the daemon computes no values), warms it up,
then records the ops of one call with the daemon's op recorder. The trace is what
`kpt.sim.replay` runs on a profile; predict_h200_steps.py and host_model_fit.py use it.
Needs kpt-adapter-sim (CPU only).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("KPT_SIM_NUMERICS", "0")  # timing only: shapes and costs, no values
os.environ.setdefault("KPT_SIM_PROFILE", "h200")


def record(fn, path: Path, warmup: int = 2) -> dict:
    """One call of fn() on kpt_sim, as an op trace (fn built its tensors on kpt_sim)."""
    import torch

    from kpt.adapters.sim._runtime import runtime

    for _ in range(warmup):
        fn()
    torch.kpt_sim.synchronize()
    client = runtime().client
    counts: list[int] = []  # tensor arguments per launch, in issue order
    original = client.launch

    def launch(device, op, in_refs, out_refs, *rest, **options):
        counts.append(len(in_refs) + len(out_refs))
        return original(device, op, in_refs, out_refs, *rest, **options)

    client.record_ops(True)
    client.launch = launch
    try:
        fn()
        torch.kpt_sim.synchronize()
    finally:
        client.launch = original
    written = client.dump_ops(str(path))
    client.record_ops(False)
    trace = json.loads(Path(written).read_text())
    # The daemon's recorder keeps no tensor counts: add them (the host model charges
    # optimizer kernels per tensor), matching launches in issue order.
    recorded = launches(trace)
    if len(recorded) == len(counts):
        for op, count in zip(recorded, counts):
            op["tensors"] = count
    return trace


def launches(trace: dict) -> list[dict]:
    return [op for op in trace["ops"] if op.get("op") == "launch"]


def launch_seconds(op: dict, profile) -> float:
    """One recorded launch's kernel seconds on a profile, as the profiler times a kernel queued
    behind others: its duration less the latency an idle device pays (launch_latency_s); no
    host, no overlap."""
    from kpt.sim import OpCost, op_time

    shape = tuple(op["shape"]) if op.get("shape") else None
    cost = OpCost(op["class"], op.get("flops", 0.0), op.get("bytes", 0.0),
                  op.get("dtype", "fp32"), shape)  # fmt: skip
    return op_time(profile, *cost) - profile.launch_latency_s
