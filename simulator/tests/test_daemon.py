"""The daemon through SimClient: values, async errors, memory, events, time, faults, modes."""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pytest
from device_arrays import download, empty, upload

from kpt.sim import (
    DeviceHangError,
    DeviceLostError,
    InvalidRequestError,
    OpCost,
    OutOfMemoryError,
    SimClient,
    TensorRef,
    load_profile,
    op_time,
)
from kpt.sim._daemon_thread import serve_in_thread

HEARTBEAT = 0.2  # short, so a silent client is forgotten within ~0.6 s
GIB = 1 << 30


@pytest.fixture
def daemon():
    with serve_in_thread("test-asic", 2, heartbeat_interval=HEARTBEAT) as served:
        yield served


@pytest.fixture
def client(daemon):
    c = SimClient(
        daemon[0], timeout=10, heartbeat_interval=HEARTBEAT, admin_token=daemon[1].admin_token
    )
    yield c
    c.close()


@contextlib.contextmanager
def connected(profile="test-asic", devices=2, numerics=True):
    """(client, daemon) for a fresh in-thread daemon."""
    with serve_in_thread(profile, devices, numerics=numerics, heartbeat_interval=HEARTBEAT) as (
        endpoint,
        served,
    ):
        c = SimClient(endpoint, heartbeat_interval=HEARTBEAT, admin_token=served.admin_token)
        try:
            yield c, served
        finally:
            c.close()


def test_hello_reports_mode_and_devices_list_profiles(client):
    assert client.numerics is True
    assert client.executor == "numpy"
    devices = client.devices()
    assert [d["index"] for d in devices] == [0, 1]
    assert devices[0]["profile"] == "test-asic"
    assert devices[0]["memory_total"] == load_profile("test-asic").hbm_bytes


def test_write_launch_read_round_trip_with_values(client):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 5)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    x, w = upload(client, 0, a), upload(client, 0, b)
    y, z = empty(client, 0, (8, 3)), empty(client, 0, (8, 3))
    client.launch(0, "matmul", [x, w], [y])
    client.launch(0, "relu", [y], [z])
    np.testing.assert_allclose(download(client, z), np.maximum(a @ b, 0), rtol=1e-5)


def test_views_share_a_buffer_offsets_and_strides(client):
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    x = upload(client, 0, a)
    transposed = TensorRef(x.buffer, 0, "float32", (6, 4), (1, 6))
    row2 = TensorRef(x.buffer, 2 * 6 * 4, "float32", (6,), (1,))
    out = empty(client, 0, (6, 4))
    client.launch(0, "add", [transposed], [out], {"scalar": 1.0})
    np.testing.assert_array_equal(download(client, out), a.T + 1)
    client.launch(0, "mul", [row2], [row2], {"scalar": 0.0})  # in place, one row only
    expected = a.copy()
    expected[2] = 0
    np.testing.assert_array_equal(download(client, x), expected)


def test_launch_errors_wait_for_the_next_synchronize_then_clear(client):
    x = upload(client, 0, np.ones(4, np.float32))
    client.launch(0, "no_such_op", [x], [x])  # a cast: returns at once, no error yet
    client.launch(0, "add", [x, x], [x])  # later work still runs
    with pytest.raises(InvalidRequestError, match=r"no_such_op.*\(and 0|no_such_op") as info:
        client.synchronize()
    assert "not implemented by the numpy executor" in str(info.value)
    client.synchronize()  # the error was reported once
    np.testing.assert_array_equal(download(client, x), np.full(4, 2.0, np.float32))


def test_a_launch_counts_the_ops_before_it_that_launched_nothing(client):
    x = upload(client, 0, np.ones(4, np.float32))
    client.launch(0, "add", [x, x], [x], host_ops=12)  # views and allocations the host made
    client.synchronize()
    client.launch(0, "add", [x, x], [x], host_ops=-1)
    with pytest.raises(InvalidRequestError, match="'host_ops' = -1"):
        client.synchronize()
    np.testing.assert_array_equal(download(client, x), np.full(4, 2.0, np.float32))


def test_async_error_surfaces_at_a_blocking_read(client):
    x = upload(client, 0, np.ones((2, 3), np.float32))
    bad = TensorRef(x.buffer, 0, "float32", (2, 3), (3, 1))
    client.launch(0, "matmul", [bad, bad], [x])  # (2,3) @ (2,3): shapes do not fit
    with pytest.raises(InvalidRequestError, match="matmul"):
        client.read(x.buffer, 0, 4)


def test_out_of_memory_names_requested_free_and_total(client):
    total = client.memory_stats(0)["total"]
    held = client.alloc(0, total // 2)
    with pytest.raises(OutOfMemoryError) as info:
        client.alloc(0, total)
    error = info.value
    assert error.requested == total
    assert error.total == total
    assert 0 < error.free <= total - total // 2
    assert str(total) in str(error) and "free" in str(error)
    client.free(held)
    assert client.memory_stats(0)["allocated"] == 0


def test_bad_buffers_are_named_and_the_daemon_keeps_serving(daemon, client):
    x = upload(client, 0, np.ones(4, np.float32))
    client.free(x.buffer)
    with pytest.raises(InvalidRequestError, match=f"buffer {x.buffer} was freed"):
        client.read(x.buffer, 0, 4)
    client.free(10_000)  # queued: the error comes with the next blocking call
    with pytest.raises(InvalidRequestError, match="does not exist"):
        client.synchronize()
    y = upload(client, 0, np.ones(4, np.float32))
    with pytest.raises(InvalidRequestError, match="outside buffer"):
        client.read(y.buffer, 8, 16)
    client.launch(0, "add", [TensorRef(y.buffer, 0, "float32", (8,), (1,))], [y], {"scalar": 1})
    with pytest.raises(InvalidRequestError, match=r"reaches bytes \[0, 32\) outside buffer"):
        client.synchronize()
    z = upload(client, 1, np.ones(4, np.float32))
    client.launch(0, "add", [y, z], [y])
    with pytest.raises(InvalidRequestError, match="lives on device 1"):
        client.synchronize()
    with SimClient(daemon[0], heartbeat_interval=HEARTBEAT) as other:
        with pytest.raises(InvalidRequestError, match="belongs to another client"):
            other.read(y.buffer, 0, 4)
        assert other.now() >= 0
    np.testing.assert_array_equal(download(client, y), np.ones(4, np.float32))


def test_copy_across_devices_moves_values(client):
    a = np.arange(6, dtype=np.float32)
    x = upload(client, 0, a)
    y = empty(client, 1, (6,))
    client.copy(x, y)
    np.testing.assert_array_equal(download(client, y), a)
    m = upload(client, 0, a.reshape(2, 3))
    transposed = TensorRef(m.buffer, 0, "float32", (3, 2), (1, 3))
    z = empty(client, 1, (3, 2))
    client.copy(transposed, z)  # strided: the executor's "copy" op does it
    np.testing.assert_array_equal(download(client, z), a.reshape(2, 3).T)
    client.copy(x, TensorRef.contiguous(z.buffer, "float32", (2, 3)))
    with pytest.raises(InvalidRequestError, match="dtype and shape must match"):
        client.synchronize()


def test_events_time_an_op_by_the_profile_cost_model(client):
    x = empty(client, 0, (4,))
    cost = OpCost("matmul", 2e9, 1e6, "fp32")
    start = client.record_event(0)
    client.launch(0, "fill", [], [x], {"value": 3.0}, cost=cost)
    end = client.record_event(0)
    elapsed = client.event_time(end) - client.event_time(start)
    expected = op_time(load_profile("test-asic"), "matmul", 2e9, 1e6, "fp32")
    assert elapsed == pytest.approx(expected, rel=1e-9)
    assert client.synchronize() >= client.event_time(end)
    np.testing.assert_array_equal(download(client, x), np.full(4, 3.0, np.float32))


def test_wait_event_orders_streams(client):
    x = empty(client, 0, (4,))
    slow = OpCost("matmul", 4e9, 0.0, "fp32")
    client.launch(0, "fill", [], [x], {"value": 1.0}, stream=1, cost=slow)
    done = client.record_event(0, stream=1)
    client.wait_event(done, 0, stream=2)
    after = client.record_event(0, stream=2)
    assert client.event_time(after) >= client.event_time(done) > 0


def test_wait_stream_orders_streams_in_one_message(client):
    x = empty(client, 0, (4,))
    slow = OpCost("matmul", 4e9, 0.0, "fp32")
    client.launch(0, "fill", [], [x], {"value": 1.0}, stream=1, cost=slow)
    done = client.record_event(0, stream=1)
    client.wait_stream(0, stream=2, on=1)
    after = client.record_event(0, stream=2)
    alone = client.record_event(0, stream=3)  # a stream that waited for nothing
    assert client.event_time(after) >= client.event_time(done) > client.event_time(alone)
    client._queue("wait_stream", {"device": 0, "stream": 2})  # no `on`: refused by name
    with pytest.raises(InvalidRequestError, match="'on'"):
        client.synchronize()


def test_timing_only_mode_allocates_80_gb_without_host_memory():
    with connected("h100-sxm", 1, numerics=False) as (c, served):
        assert c.numerics is False
        buffer = c.alloc(0, 80 * 10**9)
        n = 100_000
        big = TensorRef.contiguous(buffer, "bfloat16", (n, n))
        out = TensorRef(buffer, 2 * n * n, "bfloat16", (n, n), (n, 1))
        c.launch(0, "matmul", [big, big], [out])
        t = c.synchronize()
        # 2 * 1e15 FLOPs at < 1e15 FLOP/s: over two seconds of simulated time
        assert t > 2 * n**3 / load_profile("h100-sxm").peak_flops["matrix"]["bf16"]
        assert c.memory_stats(0)["allocated"] >= 80 * 10**9
        assert not c.read(buffer, 0, 16).any()  # no values in timing-only mode
        assert served.buffers[buffer].storage is None


def test_client_that_disconnects_gets_its_memory_freed(daemon):
    endpoint, served = daemon
    c = SimClient(endpoint, heartbeat_interval=HEARTBEAT)
    c.alloc(0, 1 << 20)
    c._wire.close()  # vanish without saying goodbye: heartbeats stop
    deadline = time.monotonic() + 5
    with SimClient(endpoint, heartbeat_interval=HEARTBEAT) as watcher:
        while watcher.memory_stats(0)["allocated"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.memory_stats(0)["allocated"] == 0
    assert not served.buffers


def test_close_frees_at_once(daemon):
    endpoint, served = daemon
    c = SimClient(endpoint, heartbeat_interval=HEARTBEAT)
    c.alloc(0, 1 << 20)
    c.close()
    assert not served.buffers


def test_same_program_gives_the_same_times_and_trace(tmp_path):
    def run(trace_path):
        with connected() as (c, _):
            x = upload(c, 0, np.arange(64, dtype=np.float32).reshape(8, 8))
            y = empty(c, 1, (8, 8))
            for _ in range(20):
                c.launch(0, "matmul", [x, x], [x])
                c.copy(x, y, stream=1)
            times = (c.synchronize(), c.now())
            values = download(c, y)
            c.dump_trace(trace_path)
            return times, values

    first, second = run(tmp_path / "a.json"), run(tmp_path / "b.json")
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    trace = json.loads((tmp_path / "a.json").read_text())
    assert trace == json.loads((tmp_path / "b.json").read_text())


def test_injected_device_loss_surfaces_at_synchronize(client):
    x = upload(client, 0, np.ones(4, np.float32))
    client.inject_fault("device_lost", device=0)
    client.launch(0, "add", [x, x], [x])
    with pytest.raises(DeviceLostError, match="device 0"):
        client.synchronize(0)
    with pytest.raises(InvalidRequestError, match="fault kind 'meltdown' unknown"):
        client.inject_fault("meltdown", device=0)


def test_reset_frees_everything_and_restarts_the_clock(client):
    x = upload(client, 0, np.ones(1024, np.float32))
    client.launch(0, "add", [x, x], [x])
    assert client.synchronize() > 0
    client.reset()
    assert client.now() == 0
    assert client.memory_stats(0)["allocated"] == 0
    with pytest.raises(InvalidRequestError):
        client.read(x.buffer, 0, 4)


def test_peak_memory_resets_to_what_is_held(client):
    a, b = client.alloc(0, 4096), client.alloc(0, 4096)
    client.free(b)
    stats = client.memory_stats(0)
    assert stats["peak"] > stats["allocated"] > 0
    client.reset_peak_memory_stats(0)
    assert client.memory_stats(0)["peak"] == client.memory_stats(0)["allocated"]
    client.free(a)


def test_a_freed_buffer_is_refused_even_after_many_launches_on_it(client):
    x = upload(client, 0, np.ones(4, np.float32))
    for _ in range(3):
        client.launch(0, "add", [x, x], [x])
    client.synchronize()
    client.free(x.buffer)
    client.launch(0, "add", [x, x], [x])
    with pytest.raises(InvalidRequestError, match=f"buffer {x.buffer} was freed"):
        client.synchronize()


def test_large_transfers_travel_in_chunks(client, monkeypatch):
    import kpt.sim._client as client_module

    monkeypatch.setattr(client_module, "CHUNK_BYTES", 1000)
    data = np.random.default_rng(3).integers(0, 255, 4096, dtype=np.uint8)
    buffer = client.alloc(0, 5000)
    client.write(buffer, 100, data)
    np.testing.assert_array_equal(client.read(buffer, 100, 4096), data)


def test_small_reads_come_inline_and_other_forms_still_work(client, monkeypatch):
    import kpt.sim._client as client_module

    data = np.arange(200, dtype=np.uint8)
    buffer = client.alloc(0, 200)
    client.write(buffer, 0, data)
    # Asked for inline: the bytes ride in the reply's header, no array frame.
    header = {"buffer": buffer, "offset": 8, "nbytes": 16, "stream": 0, "inline": True}
    reply = client._wire.call("read", header)
    assert reply.arrays == [] and reply.header["data"] == data[8:24].tobytes()
    # Not asked (an older client): an array frame, as before.
    reply = client._wire.call("read", {"buffer": buffer, "offset": 8, "nbytes": 16})
    assert "data" not in reply.header
    np.testing.assert_array_equal(reply.arrays[0], data[8:24])
    # Both reach SimClient.read's caller as the same uint8 array.
    inline = client.read(buffer, 8, 16)
    monkeypatch.setattr(client_module, "INLINE_READ_BYTES", 8)
    framed = client.read(buffer, 8, 16)
    assert inline.dtype == framed.dtype == np.uint8
    np.testing.assert_array_equal(inline, data[8:24])
    np.testing.assert_array_equal(framed, data[8:24])


def test_threads_share_one_client_without_mixing_their_work(client):
    import threading

    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            x = upload(client, 0, np.full(32, float(k), np.float32))
            for _ in range(50):
                client.launch(0, "add", [x], [x], {"scalar": 1.0})
            results[k] = download(client, x)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for k in range(4):
        np.testing.assert_array_equal(results[k], np.full(32, k + 50.0, np.float32))


def test_alloc_async_ids_work_everywhere_and_defer_out_of_memory(client):
    buffer = client.alloc_async(0, 16)
    assert buffer < 0
    client.write(buffer, 0, np.arange(4, dtype=np.float32))
    x = TensorRef.contiguous(buffer, "float32", (4,))
    out = TensorRef.contiguous(client.alloc_async(0, 16), "float32", (4,))
    client.launch(0, "add", [x, x], [out])
    np.testing.assert_array_equal(download(client, out), [0, 2, 4, 6])
    with pytest.raises(OutOfMemoryError) as info:  # raised by the allocation, not later
        client.alloc_async(0, 1 << 40)
    assert info.value.requested == 1 << 40
    client.synchronize()  # nothing left pending
    client.free(buffer)
    client.free(out.buffer)
    assert client.memory_stats(0)["allocated"] == 0


def test_a_daemon_speaking_another_protocol_is_refused_naming_both(tmp_path):
    from kpt.sim import SimError
    from kpt.wire import Server

    with Server(f"ipc://{tmp_path}/other.sock") as server:
        server.register("hello", lambda msg, client: {"protocol": "kpt-sim/9"})
        with pytest.raises(SimError, match=r"'kpt-sim/9'.*'kpt-sim/1'"):
            SimClient(server.endpoint, heartbeat_interval=HEARTBEAT)


def test_no_endpoint_anywhere_says_how_to_get_one(monkeypatch):
    monkeypatch.delenv("KPT_SIM_ENDPOINT", raising=False)
    with pytest.raises(ValueError, match="KPT_SIM_ENDPOINT"):
        SimClient()


def test_endpoint_from_the_environment(daemon, monkeypatch):
    monkeypatch.setenv("KPT_SIM_ENDPOINT", daemon[0])
    with SimClient(heartbeat_interval=HEARTBEAT) as c:
        assert c.endpoint == daemon[0]
        assert len(c.devices()) == 2


def test_an_idle_client_with_a_long_heartbeat_keeps_its_buffers(daemon):
    endpoint, _ = daemon  # the daemon forgets clients silent for 3 x 0.2 s
    with SimClient(endpoint) as c:  # local daemon: 10 s wire heartbeat, pings at 0.1 s
        assert c.heartbeat_interval >= 10
        buffer = c.alloc(0, 16)
        c.write(buffer, 0, np.arange(4, dtype=np.float32))
        time.sleep(1.5)
        assert c.read(buffer, 0, 16).view(np.float32).tolist() == [0, 1, 2, 3]


def test_a_daemon_slower_than_the_call_timeout_is_a_hang_not_a_loss(daemon):
    with SimClient(daemon[0]) as c:
        x = upload(c, 0, np.ones((1000, 1000), np.float32))
        c.timeout = 0.02
        for _ in range(40):  # ~0.3 s of single-threaded numpy, far more than 0.02 s
            c.launch(0, "softmax", [x], [x])
        with pytest.raises(DeviceHangError, match="'synchronize' got no answer"):
            c.synchronize()


def test_graph_replay_and_host_work_change_host_time_only():
    """On a profile with a host model, a replayed graph's launches cost the host once; host
    work moves the next issue; values are computed the same; bad fields are named."""
    with connected(profile="h100-sxm", devices=1) as (c, _):
        x = empty(c, 0, (4,))

        def timed(graph: bool, work_s: float = 0.0) -> float:
            c.synchronize()
            start = c.record_event(0)
            c.graph_replay(0, graph)
            for i in range(20):
                c.launch(0, "fill", [], [x], {"value": float(i)})
            c.graph_replay(0, False)
            c.host_work(0, work_s)
            c.launch(0, "fill", [], [x], {"value": 7.0})
            end = c.record_event(0)
            return c.event_time(end) - c.event_time(start)

        eager, graph, worked = timed(False), timed(True), timed(True, 1e-3)
        assert graph < eager / 2  # 20 host launches became one
        assert worked == pytest.approx(graph + 1e-3, rel=0.02)
        np.testing.assert_array_equal(download(c, x), np.full(4, 7.0, np.float32))
        c.host_work(0, -1.0)
        with pytest.raises(InvalidRequestError, match="field 'seconds'"):
            c.synchronize()
        c.graph_replay(0, True)
        c.launch(0, "fill", [], [x], {"value": 1.0})
        c.synchronize()  # the daemon serves on, in graph mode
