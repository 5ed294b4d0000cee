"""SimClient's non-blocking paths: write_async, wire-form refs and costs, bounded run-ahead."""

from __future__ import annotations

import numpy as np
import pytest

import kpt.sim._client as client_module
from kpt.sim import InvalidRequestError, SimClient, TensorRef
from kpt.sim._daemon_thread import serve_in_thread


@pytest.fixture
def client():
    with serve_in_thread("test-asic", 1, heartbeat_interval=0.2) as (endpoint, _):
        c = SimClient(endpoint, timeout=10, heartbeat_interval=0.2)
        yield c
        c.close()


def test_write_async_lands_in_order_with_launches(client):
    a = np.arange(8, dtype=np.float32)
    src, dst = client.alloc(0, a.nbytes), client.alloc(0, a.nbytes)
    ref_src = TensorRef.contiguous(src, "float32", (8,))
    ref_dst = TensorRef.contiguous(dst, "float32", (8,))
    client.write_async(src, 0, a)
    client.launch(0, "add", [ref_src, ref_src], [ref_dst])  # must see the bytes written above
    a[:] = -1  # the caller may reuse its array at once: the bytes were copied
    client.write_async(src, 0, np.ones(8, np.float32))
    out = client.read(dst, 0, a.nbytes).view(np.float32)
    np.testing.assert_array_equal(out, 2 * np.arange(8, dtype=np.float32))
    np.testing.assert_array_equal(client.read(src, 0, a.nbytes).view(np.float32), np.ones(8))


def test_write_async_error_is_raised_by_the_next_synchronize(client):
    client.write_async(987654, 0, b"abcd")  # no such buffer
    with pytest.raises(InvalidRequestError, match="987654"):
        client.synchronize()
    client.synchronize()  # reported once


def test_wire_form_refs_and_cost_are_accepted(client):
    buffer = client.alloc(0, 16)
    ref = [buffer, 0, "float32", [4], [1]]
    client.launch(0, "fill", [], [ref], {"value": 3.0}, cost=["elementwise", 4.0, 16.0])
    np.testing.assert_array_equal(client.read(buffer, 0, 16).view(np.float32), [3, 3, 3, 3])


def test_run_ahead_is_bounded_by_fences(client, monkeypatch):
    monkeypatch.setattr(client_module, "FENCE_OPS", 8)
    monkeypatch.setattr(client_module, "BATCH_OPS", 4)
    buffer = client.alloc(0, 16)
    ref = TensorRef.contiguous(buffer, "float32", (4,))
    most = 0
    for _ in range(200):
        client.launch(0, "fill", [], [ref], {"value": 1.0})
        most = max(most, len(client._fences))
    assert 1 <= most <= client_module.MAX_FENCES_AHEAD
    client.synchronize()
    np.testing.assert_array_equal(client.read(buffer, 0, 16).view(np.float32), [1, 1, 1, 1])
