"""Recording a daemon session as an op trace and replaying its timing elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kpt.sim import InvalidRequestError, OpCost, SimClient, TensorRef, replay
from kpt.sim._daemon_thread import serve_in_thread


def _workload(c: SimClient) -> float:
    """Values, copies, events, a collective and host transfers on two devices."""
    a = c.alloc(0, 4096)
    b = c.alloc(1, 4096)
    c.write(a, 0, np.ones(1024, np.float32))
    x = TensorRef.contiguous(a, "float32", (32, 32))
    y = TensorRef.contiguous(b, "float32", (32, 32))
    for _ in range(5):
        c.launch(0, "matmul", [x, x], [x], cost=OpCost("matmul", 5e8, 1e6, "fp32"))
    done = c.record_event(0, stream=0)
    c.copy(x, y, stream=1)
    c.wait_event(done, 1, stream=2)
    c.launch(1, "relu", [y], [y], stream=2)
    c.wait_stream(1, stream=0, on=2)
    c.collective("all_reduce", [x, y])
    c.read(b, 0, 4096)
    c.free(a)
    return c.synchronize()


def test_a_recorded_session_replays_to_the_same_predicted_time(tmp_path):
    with (
        serve_in_thread("test-asic", 2) as (endpoint, daemon),
        SimClient(endpoint, admin_token=daemon.admin_token) as c,
    ):
        c.record_ops()
        end = _workload(c)
        path = c.dump_ops(tmp_path / "ops.json")
    doc = json.loads(Path(path).read_text())
    assert doc["profile"] == "test-asic:2" and doc["devices"] == 2
    kinds = {op["op"] for op in doc["ops"]}
    assert {"alloc", "h2d", "launch", "record", "copy", "wait", "wait_stream", "collective",
            "d2h"} <= kinds  # fmt: skip
    assert replay(doc)["predicted_s"] == pytest.approx(end, rel=1e-12)
    # The same session on other chips: the point of recording it.
    other = replay(doc, profile="h100-sxm:2")
    assert other["predicted_s"] != pytest.approx(end)


def test_dump_without_recording_says_what_to_do():
    with (
        serve_in_thread("test-asic", 1) as (endpoint, daemon),
        SimClient(endpoint, admin_token=daemon.admin_token) as c,
        pytest.raises(InvalidRequestError, match="record_ops first"),
    ):
        c.dump_ops("/dev/null")
