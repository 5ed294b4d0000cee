"""Soak and fuzz (issue 10): client processes share one daemon -- one hostile, one computing long
batches, one idle holding memory, one honest -- and at the end every honest client's values are
right, its memory intact, and the daemon alive. The long run is benchmarks/bench_soak.py."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kpt.sim import SimClient, start_daemon

sys.path.insert(0, str(Path(__file__).parent))
from soak_clients import Soak

pytestmark = pytest.mark.timeout(240)
SECONDS = 20  # each client's run; with start-up and checks about a minute in all


def test_hostile_busy_idle_and_honest_clients_share_one_daemon():
    with start_daemon("test-asic", devices=2) as daemon:
        soak = Soak(daemon.endpoint, SECONDS, seed=10)
        try:
            soak.start()
            results = soak.finish(timeout=150)
        finally:
            soak.reap()
        failed = {role: r for role, r in results.items() if not r["ok"]}
        assert not failed, failed
        hostile = results["hostile"]
        assert hostile["messages"] >= 200, hostile
        assert hostile["codes"].get("AccessDeniedError", 0) > 0, hostile  # admin was tried
        assert results["honest"]["rounds"] >= 3, results["honest"]
        assert results["batcher"]["batches"] >= 1, results["batcher"]
        assert results["idle"]["intact"]
        assert daemon.alive(), "the daemon died under the soak"
        with SimClient(daemon.endpoint, timeout=30, admin_token=daemon.admin_token) as owner:
            # Everyone has left: the memory they held is free again, and the daemon serves.
            deadline = time.monotonic() + 30
            while any(owner.memory_stats(d)["allocated"] for d in (0, 1)):
                assert time.monotonic() < deadline, [owner.memory_stats(d) for d in (0, 1)]
                time.sleep(0.2)
            buffer = owner.alloc(0, 64)
            assert not owner.read(buffer, 0, 64).any()


def test_an_idle_client_keeps_its_memory_past_three_heartbeat_intervals():
    with (
        start_daemon("test-asic") as daemon,
        SimClient(daemon.endpoint, timeout=30, heartbeat_interval=1.0) as idle,
    ):
        buffer = idle.alloc(0, 64)
        idle.write(buffer, 0, np.arange(16, dtype=np.float32))
        idle.synchronize()
        time.sleep(5)  # silent for five heartbeat intervals, its connection open throughout
        np.testing.assert_array_equal(idle.read(buffer, 0, 64).view(np.float32), np.arange(16))
