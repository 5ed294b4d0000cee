"""Captured graphs in the daemon: capture records without running, a launch replays with values
and a replay's timing, refusals during capture, and buffers freed under a graph."""

from __future__ import annotations

import numpy as np
import pytest
from device_arrays import download, empty, upload

from kpt.sim import InvalidRequestError, SimClient
from kpt.sim._daemon_thread import serve_in_thread

HEARTBEAT = 1.0


@pytest.fixture(params=[True, False], ids=["values", "timing-only"])
def client(request):
    with serve_in_thread("h100-sxm", 2, numerics=request.param, heartbeat_interval=HEARTBEAT) as (
        endpoint,
        served,
    ):
        c = SimClient(endpoint, heartbeat_interval=HEARTBEAT, admin_token=served.admin_token)
        yield c
        c.close()


def elapsed(c: SimClient, run) -> float:
    c.synchronize()
    start = c.record_event(0)
    run()
    end = c.record_event(0)
    return c.event_time(end) - c.event_time(start)


def capture_chain(c: SimClient, graph: int, x, y, steps: int = 20) -> None:
    """y = relu(x) * 2**steps ... as `steps` launches, captured into `graph`."""
    c.graph("begin", graph, device=0)
    c.launch(0, "relu", [x], [y])
    for _ in range(steps - 1):
        c.launch(0, "add", [y, y], [y])
    c.graph("end", graph, device=0)


def test_capture_runs_nothing_and_each_launch_replays_with_values(client):
    c = client
    a = np.array([-1.0, 0.5, 2.0, -3.0], np.float32)
    x, y = upload(c, 0, a), empty(c, 0, (4,))
    before = c.synchronize()
    capture_chain(c, 1, x, y, steps=3)
    assert c.synchronize() == before  # captured, not run: no simulated time passed
    if c.numerics:
        np.testing.assert_array_equal(download(c, y), np.zeros(4, np.float32))
    c.graph("launch", 1)
    if c.numerics:
        np.testing.assert_array_equal(download(c, y), np.maximum(a, 0) * 4)
    c.write(x.buffer, 0, -a)  # a new input in the captured buffer, as CUDA graphs take them
    c.graph("launch", 1)
    if c.numerics:
        np.testing.assert_array_equal(download(c, y), np.maximum(-a, 0) * 4)
    c.graph("free", 1)
    c.graph("launch", 1)
    with pytest.raises(InvalidRequestError, match="graph 1 does not exist"):
        c.synchronize()


def test_a_replay_costs_the_host_one_launch_and_the_device_the_same_kernels(client):
    c = client
    x, y = upload(c, 0, np.ones(1 << 16, np.float32)), empty(c, 0, (1 << 16,))
    capture_chain(c, 7, x, y)

    def eager() -> None:
        c.launch(0, "relu", [x], [y])
        for _ in range(19):
            c.launch(0, "add", [y, y], [y])

    def graphed() -> None:
        c.graph_replay(0, True)
        eager()
        c.graph_replay(0, False)

    eager_s, marked_s = elapsed(c, eager), elapsed(c, graphed)
    replay_s = elapsed(c, lambda: c.graph("launch", 7))
    assert replay_s < eager_s  # the host issued one launch, not twenty
    # the same kernels, timed as the replay the graph_replay marks describe
    assert replay_s == pytest.approx(marked_s, rel=1e-9)


def test_only_launches_are_captured_and_the_daemon_serves_on(client):
    c = client
    x, y = upload(c, 0, np.ones(4, np.float32)), empty(c, 0, (4,))
    other = empty(c, 1, (4,))
    c.graph("begin", 3, device=0)
    with pytest.raises(InvalidRequestError, match="read on device 0 while it captures graph 3"):
        c.read(y.buffer, 0, 16)
    c.copy(x, y)
    c.record_event(0)
    c.graph("begin", 4, device=0)  # one capture per device at a time
    c.launch(1, "relu", [other], [other])  # another device is not captured
    c.graph("end", 3, device=0)
    with pytest.raises(InvalidRequestError, match="copy on device 0") as caught:
        c.synchronize()
    assert "and 2 later error" in str(caught.value)  # the event, "already capturing"
    c.graph("end", 3, device=0)
    c.graph("begin", 3, device=0)  # graph 3 exists
    c.graph("launch", 99)
    with pytest.raises(InvalidRequestError, match="device 0 is not capturing"):
        c.synchronize()
    c.launch(0, "relu", [x], [y])  # the daemon serves on, nothing is left capturing
    c.synchronize()


def test_a_buffer_freed_under_a_graph_fails_its_launch_and_touches_nothing(client):
    c = client
    x, y = upload(c, 0, np.ones(4, np.float32)), empty(c, 0, (4,))
    capture_chain(c, 5, x, y, steps=2)
    c.free(y.buffer)
    y2 = empty(c, 0, (4,))  # a new buffer: never the freed one's id
    assert y2.buffer != y.buffer
    before = c.synchronize()
    c.graph("launch", 5)
    with pytest.raises(InvalidRequestError, match=f"buffer {y.buffer}, which the graph"):
        c.synchronize()
    assert c.synchronize() == before
    c.graph("free", 5)  # forgetting it is still allowed


def test_malformed_graph_messages_are_refused_by_name(client):
    c = client
    for header, expected in (
        ({"graph": "one", "device": 0}, "field 'graph'"),
        ({"graph": -1, "device": 0}, "field 'graph'"),
        ({"graph": 1, "device": 9}, "field 'device'"),
    ):
        c._queue("graph_begin", header)
        with pytest.raises(InvalidRequestError, match=expected):
            c.synchronize()
    c._queue("graph_launch", {"graph": [1]})
    with pytest.raises(InvalidRequestError, match="field 'graph'"):
        c.synchronize()
