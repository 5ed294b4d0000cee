"""Faults injected in the simulator slow the kpt backend's collectives as they would on hardware.

Two ranks on two simulated H100s of one daemon, each timing an all-reduce with device events
(`kpt-collectives bench`'s rank code). A daemon started with a degraded link between the two
chips, or with one chip straggling, must show the all-reduce slower by about the fault's
factor (up to it, for a straggler); a healthy daemon is the baseline, measured in the same
test.
"""

from __future__ import annotations

import json

import pytest

import kpt.sim
from kpt.collectives._bench import run_bench

pytest.importorskip("kpt.adapters.sim")
pytestmark = pytest.mark.timeout(900)

NBYTES = 64 << 20  # large enough that bandwidth, not latency, sets the time


def _all_reduce_seconds(tmp_path, name: str, faults: list[dict] | None) -> float:
    path = None
    if faults is not None:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"faults": faults}))
    handle = kpt.sim.start_daemon(profile="h100-sxm", devices=2, executor="torch", faults=path)
    try:
        rows = run_bench("kpt", "kpt_sim", 2, [NBYTES], iters=2, endpoint=handle.endpoint)
    finally:
        handle.stop()
    (row,) = rows
    assert row["kind"] == "all_reduce" and row["bytes"] == NBYTES
    return row["sim_s"]


def test_a_degraded_link_and_a_straggler_slow_the_all_reduce_by_their_factors(tmp_path):
    healthy = _all_reduce_seconds(tmp_path, "healthy", None)
    quarter = _all_reduce_seconds(
        tmp_path, "degraded", [{"kind": "link_degraded", "link": [0, 1], "factor": 0.25}]
    )
    straggling = _all_reduce_seconds(
        tmp_path, "straggler", [{"kind": "straggler", "device": 1, "factor": 3.0}]
    )
    assert healthy > 0
    # A quarter of the bandwidth: the bandwidth-bound ring takes about four times as long (less
    # its fixed latency, which the fault leaves alone).
    assert 3.0 < quarter / healthy <= 4.05, (healthy, quarter)
    # A chip three times slower sends at a third of its links' speed and the ring waits for
    # it: slower by up to the factor (the straggler's own steps overlap rank 0's; 2x here).
    assert 1.5 < straggling / healthy <= 3.05, (healthy, straggling)
