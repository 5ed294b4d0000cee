"""Timelines on test-asic, computed by hand from its profile's round numbers."""

import tracemalloc

import pytest

from kpt.sim import InvalidRequestError, OpCost, OutOfMemoryError, Simulator, load_profile

P = load_profile("test-asic")
LAUNCH = P.kernel_launch_s


@pytest.fixture
def sim():
    return Simulator("test-asic", devices=2)


def test_host_copy_then_kernel_timeline(sim):
    buf = sim.alloc(0, 100_000)
    write_end = sim.write(buf, 0, 100_000)
    # the copy ends at t = 2 us latency + 100 kB / 10 GB/s = 12 us
    assert write_end == pytest.approx(P.host_link_latency_s + 100_000 / P.host_link_bandwidth)
    assert write_end == pytest.approx(12e-6)
    end = sim.launch(0, OpCost("matmul", 2e6, 0))  # same stream: starts after the copy
    assert end == pytest.approx(write_end + LAUNCH + 2e6 / 1e12)
    assert sim.now() == 0.0  # asynchronous: the host has not waited
    assert sim.synchronize() == pytest.approx(end)


def test_streams_share_the_compute_engine(sim):
    a = sim.launch(0, OpCost("matmul", 1e6, 0), stream=1)
    b = sim.launch(0, OpCost("matmul", 1e6, 0), stream=2)
    one = LAUNCH + 1e6 / 1e12
    # At issue each op's forecast is its own stream's: the host cannot know the contention.
    assert a == pytest.approx(one) and b == pytest.approx(one)
    ea, eb = sim.record_event(0, 1), sim.record_event(0, 2)
    # test-asic has one compute unit: the second kernel waits for it.
    assert sim.event_time(ea) == pytest.approx(one)
    assert sim.event_time(eb) == pytest.approx(2 * one)
    assert sim.synchronize() == pytest.approx(2 * one)


def test_small_kernels_of_two_streams_share_the_compute_units():
    import tomllib
    from importlib import resources

    from kpt.sim import profile_from_dict

    text = (resources.files("kpt.sim") / "profiles/test-asic.toml").read_text()
    chip = profile_from_dict("four-units", {**tomllib.loads(text), "compute_units": 4})
    sim = Simulator(chip)
    row = OpCost("softmax", 1e6, 0, shape=(1, 1024))  # one row: one block on one unit
    full = OpCost("matmul", 1e6, 0)  # no shape: fills every unit
    one = LAUNCH + 1e6 / 0.5e12  # vector unit: 0.5 TFLOP/s
    sim.launch(0, row, stream=1)
    sim.launch(0, row, stream=2)
    assert sim.synchronize() == pytest.approx(one)  # side by side
    start = sim.now()
    sim.launch(0, full, stream=1)
    sim.launch(0, full, stream=2)
    assert sim.synchronize() - start == pytest.approx(2 * (LAUNCH + 1e6 / 1e12))  # in turn


def test_two_copies_share_hbm_bandwidth(sim):
    src, dst = sim.alloc(0, 1_000_000), sim.alloc(0, 1_000_000)
    sim.copy(src, dst, 1_000_000, stream=1)
    sim.copy(src, dst, 1_000_000, stream=2)
    first, second = sim.record_event(0, 1), sim.record_event(0, 2)
    traffic = 2 * 1_000_000 / P.hbm_bandwidth  # read + write
    # Two DMA engines, one HBM: both copies move at half its bandwidth and end together.
    assert sim.event_time(first) == pytest.approx(LAUNCH + 2 * traffic)
    assert sim.event_time(second) == pytest.approx(LAUNCH + 2 * traffic)


def test_two_transfers_on_one_link_take_twice_as_long(sim):
    a, b = sim.alloc(0, 4_000_000), sim.alloc(1, 4_000_000)
    alpha, beta = sim.topology.path_cost(0, 1)
    assert beta == pytest.approx(P.chip_link_count * P.chip_link_bandwidth)
    alone = sim.copy(a, b, 4_000_000, stream=1)
    assert alone == pytest.approx(alpha + 4e6 / beta)  # the forecast: the link to itself
    sim.copy(a, b, 4_000_000, stream=2)
    first, second = sim.record_event(0, 1), sim.record_event(0, 2)
    # They share the link's bandwidth from the start and finish together.
    assert sim.event_time(first) == pytest.approx(alpha + 2 * 4e6 / beta)
    assert sim.event_time(second) == pytest.approx(alpha + 2 * 4e6 / beta)


def test_events_order_work_across_streams_and_devices(sim):
    end0 = sim.launch(0, OpCost("matmul", 5e6, 0), stream=0)
    event = sim.record_event(0, 0)
    free = sim.launch(1, OpCost("matmul", 1e6, 0), stream=4)  # not waiting: runs at once
    sim.wait_event(event, device=1, stream=3)
    end1 = sim.launch(1, OpCost("matmul", 1e6, 0), stream=3)
    assert end1 == pytest.approx(end0 + LAUNCH + 1e6 / 1e12)
    assert free == pytest.approx(LAUNCH + 1e6 / 1e12)
    done = sim.record_event(1, 3)
    assert sim.event_time(event) == pytest.approx(end0)
    assert sim.event_time(done) == pytest.approx(end1)
    with pytest.raises(InvalidRequestError, match="event 99"):
        sim.wait_event(99, 0, 0)


def test_recorded_events_are_bounded_and_expired_ones_named():
    sim = Simulator("test-asic", max_events=4)
    ends, events = [], []
    for i in range(10):
        ends.append(sim.launch(0, OpCost("matmul", 1e6 * (i + 1), 0)))
        events.append(sim.record_event(0, 0))
    assert len(sim._events) == 4  # the ring, not one entry per event ever recorded
    for event, end in zip(events[-4:], ends[-4:]):
        assert sim.event_time(event) == pytest.approx(end)
    with pytest.raises(InvalidRequestError, match=f"event {events[5]} expired.*newest 4"):
        sim.wait_event(events[5], 0, 0)
    with pytest.raises(InvalidRequestError, match="event 10 was never recorded"):
        sim.event_time(10)
    sim.reset()
    with pytest.raises(InvalidRequestError, match="event 0 was never recorded"):
        sim.event_time(0)
    with pytest.raises(InvalidRequestError, match="max_events=0"):
        Simulator("test-asic", max_events=0)


def test_a_long_run_of_events_keeps_memory_flat():
    sim = Simulator("test-asic", trace=False, max_events=1024)
    cost = OpCost("elementwise", 1e3, 1e3)
    for _ in range(2048):  # fill the ring, then measure another long run
        sim.launch(0, cost)
        sim.wait_event(sim.record_event(0, 0), 0, 1)
    sim.synchronize()
    tracemalloc.start()
    grown = []
    for _ in range(2):  # the second run may not grow what the first one filled (the ring)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(3_000):  # the launch queue fills: the host blocks, as on a GPU
            sim.launch(0, cost)
            sim.wait_event(sim.record_event(0, 0), 0, 1)
        sim.synchronize()
        grown.append(tracemalloc.get_traced_memory()[0] - before)
    grown = grown[1]
    tracemalloc.stop()
    # An unbounded queue of ops grows by ~500 kB here; a flat run moves by a few kB of
    # interpreter caches (once 16.1 kB on a loaded machine), so the bound sits well between.
    assert grown < 64 * 1024, grown


def test_reset_peak_restarts_the_watermark_from_what_is_allocated(sim):
    a = sim.alloc(0, 1 << 20)
    b = sim.alloc(0, 1 << 20)
    sim.free(a)
    assert sim.memory_stats(0)["peak"] >= 2 << 20
    sim.reset_peak(0)
    stats = sim.memory_stats(0)
    assert stats["peak"] == stats["allocated"] >= 1 << 20
    assert sim.memory_stats(1)["peak"] == 0  # other devices untouched
    sim.free(b)
    with pytest.raises(InvalidRequestError, match="device 5 does not exist"):
        sim.reset_peak(5)


def test_out_of_memory_names_requested_free_and_total(sim):
    sim.alloc(0, P.hbm_bytes // 2)
    with pytest.raises(OutOfMemoryError, match=r"requested \d+ bytes, free \d+ of \d+ bytes") as e:
        sim.alloc(0, P.hbm_bytes)
    assert e.value.requested == P.hbm_bytes and e.value.total == P.hbm_bytes
    assert e.value.free == P.hbm_bytes - P.hbm_bytes // 2


def test_memory_stats_track_allocated_and_peak(sim):
    a = sim.alloc(1, 1000)
    b = sim.alloc(1, 3000)
    sim.free(a)
    stats = sim.memory_stats(1)
    assert stats["allocated"] >= 3000 and stats["peak"] >= 4000
    assert stats["free"] == stats["total"] - stats["allocated"]
    sim.free(b)
    with pytest.raises(InvalidRequestError, match=f"buffer {b} is not allocated"):
        sim.free(b)


def test_bad_requests_are_named(sim):
    buf = sim.alloc(0, 100)
    with pytest.raises(InvalidRequestError, match=r"range \[50, 150\) is outside buffer"):
        sim.write(buf, 50, 100)
    with pytest.raises(InvalidRequestError, match="device 7 does not exist"):
        sim.alloc(7, 10)
    with pytest.raises(InvalidRequestError, match="non-negative"):
        sim.alloc(0, -5)


def test_an_80_gb_allocation_costs_no_host_memory():
    sim = Simulator("h100-sxm", devices=1)
    tracemalloc.start()
    buf = sim.alloc(0, 79 * 2**30)
    end = sim.write(buf, 0, 79 * 2**30)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000
    assert end > 1.0  # 79 GiB over a 64 GB/s host link takes over a second


def test_read_blocks_the_host_until_prior_work(sim):
    buf = sim.alloc(0, 1000)
    kernel_end = sim.launch(0, OpCost("matmul", 1e7, 0), stream=5)
    read_end = sim.read(buf, 0, 1000)
    assert read_end == pytest.approx(kernel_end + P.host_link_latency_s + 1000 / 10e9)
    assert sim.now() == pytest.approx(read_end)


def test_reset_returns_to_zero(sim):
    buf = sim.alloc(0, 1000)
    sim.launch(0, OpCost("matmul", 1e9, 0))
    sim.synchronize()
    sim.reset()
    assert sim.now() == 0.0 and sim.memory_stats(0)["allocated"] == 0
    with pytest.raises(InvalidRequestError):
        sim.free(buf)


@pytest.mark.parametrize(("topology", "hops"), [("switch", 2), ("ring", 4), ("torus2d", 2)])
def test_routes_by_topology(topology, hops):
    sim = Simulator("test-asic", devices=8 if topology != "torus2d" else 9, topology=topology)
    assert len(sim.topology.route(0, 4)) == hops


def test_multi_node_traffic_crosses_the_slower_network():
    sim = Simulator("test-asic", devices=4, nodes=2)
    _, intra = sim.topology.path_cost(0, 1)
    alpha, inter = sim.topology.path_cost(0, 2)
    assert inter == pytest.approx(P.network_bandwidth) and inter < intra
    assert alpha == pytest.approx(P.network_latency_s)


def test_mixed_profiles_copy_at_the_slower_chips_bandwidth():
    sim = Simulator(["test-asic", "h100-sxm"])
    _, beta = sim.topology.path_cost(1, 0)
    assert beta == pytest.approx(P.chip_link_count * P.chip_link_bandwidth)
