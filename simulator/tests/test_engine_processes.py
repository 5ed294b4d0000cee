"""The simpy engine's concurrency, by hand on test-asic: overlap, stragglers, faults as
interrupts, and a vendor's own DMA scheduler as a simpy process.

test-asic: 1 us launch, 1 TFLOP/s matrix unit, 100 GB/s HBM, 4 x 10 GB/s chip links to a
switch (40 GB/s a port, 1 us there and back), 10 GB/s host link with 2 us latency.
"""

from __future__ import annotations

import pytest
import simpy

from kpt.sim import (
    DeviceLostError,
    OpCost,
    Simulator,
    StreamEngine,
    load_profile,
    ring_all_reduce_time,
)

P = load_profile("test-asic")
US = 1e-6
BETA = P.chip_link_count * P.chip_link_bandwidth
ALPHA = P.chip_link_latency_s


def kernel(microseconds: float) -> OpCost:
    """A matmul that runs `microseconds` on test-asic, launch included."""
    return OpCost("matmul", (microseconds - 1) * 1e6, 0)


def test_compute_and_a_collective_overlap_on_two_streams():
    """DDP's overlap: the gradients of layer 2 all-reduce on stream 1 while layer 1's
    backward runs on stream 0; layer 1's all-reduce follows its own backward."""
    sim = Simulator("test-asic", devices=2)
    nbytes = 2_000_000
    ar = ring_all_reduce_time(2, nbytes, ALPHA, BETA, P.hbm_bandwidth)
    backward = 200.0  # us per layer, longer than an all-reduce
    assert ar < backward * US
    for _layer in (2, 1):
        for d in (0, 1):
            sim.launch(d, kernel(backward), stream=0)
        grads = [sim.record_event(d, 0) for d in (0, 1)]
        for d in (0, 1):
            sim.wait_event(grads[d], d, stream=1)
        sim.collective("all_reduce", nbytes, algorithm="ring", stream=1)
    # Serial: 2 x (backward + all-reduce); overlapped: only the last all-reduce is exposed.
    assert sim.synchronize() == pytest.approx(2 * backward * US + ar)


def test_a_straggler_slows_the_whole_ring():
    sim = Simulator("test-asic", devices=2)
    sim.inject_fault("straggler", device=1, factor=3.0, at=0.0)
    result = sim.collective("all_reduce", 4_000_000, algorithm="ring")
    # Chunks of 2 MB: rank 0 sends in 50 us, the straggler in 150. Step 1 (reduce): rank 0
    # receives at 1 + 150 = 151 us; rank 1 at 1 + 50 + 10 (reducing 2 MB at 100 GB/s takes 60)
    # = 61 us. Step 2: rank 1's link is busy until 150 us, so rank 0 has the data at
    # 150 + 1 + 150 = 301 us; rank 1 at 151 + 1 + 50 = 202 us.
    assert result.duration == pytest.approx(301 * US)
    quiet = Simulator("test-asic", devices=2).collective("all_reduce", 4_000_000)
    assert quiet.duration == pytest.approx(ring_all_reduce_time(2, 4e6, ALPHA, BETA, 100e9))


def test_a_late_rank_is_in_the_duration_and_not_in_the_transfer_time():
    """Rank 1 computes 300 us first: the collective's duration, from the first arrival, holds
    that wait; its transfer time, from the last arrival, is the closed form alone."""
    sim = Simulator("test-asic", devices=2)
    sim.launch(1, kernel(300))
    sim.wait_event(sim.record_event(1, 0), 1, stream=1)
    result = sim.collective("all_reduce", 4_000_000, algorithm="ring", stream=1)
    assert result.last_arrival - result.start == pytest.approx(300 * US)
    assert result.transfer_time == pytest.approx(result.predicted, rel=1e-9)
    assert result.duration == pytest.approx(result.predicted + 300 * US, rel=1e-9)


def test_a_lost_rank_fails_the_ranks_waiting_on_it_by_name():
    sim = Simulator("test-asic", devices=3)
    sim.inject_fault("device_lost", device=2, at=50 * US)
    sim.launch(2, kernel(200))  # device 2 is busy when it is lost
    result = sim.collective("all_reduce", 1000, devices=[0, 1, 2])
    with pytest.raises(DeviceLostError, match=r"device 2 \(rank 2\) was lost.*ranks \[0, 1\]"):
        sim.synchronize(0)
    # Ranks 0 and 1 arrived at once and waited until the loss reached them.
    assert result.end == pytest.approx(50 * US)


def test_a_fault_interrupts_the_kernel_in_flight():
    sim = Simulator("test-asic")
    sim.inject_fault("device_lost", device=0, at=5 * US)
    sim.launch(0, kernel(20))
    with pytest.raises(DeviceLostError, match=r"device 0 was lost at t=5\.000 us"):
        sim.synchronize()
    assert sim.summary()[0]["end_s"] == pytest.approx(5 * US)  # not 20: it was cut short


def test_a_hang_interrupts_the_kernel_in_flight_for_good():
    sim = Simulator("test-asic", hang_timeout=1.0)
    sim.inject_fault("hang", device=0, at=5 * US)
    sim.launch(0, kernel(20))
    event = sim.record_event(0)
    assert sim.event_time(event) == float("inf")


def test_the_launch_queue_blocks_the_host_when_full():
    from kpt.sim._streams import QUEUE_DEPTH

    sim = Simulator("test-asic")
    for _ in range(QUEUE_DEPTH + 10):
        sim.launch(0, kernel(10))
    # The host waited for 11 kernels to finish before it could queue the last ones.
    assert sim.now() == pytest.approx(11 * 10 * US)
    assert sim.synchronize() == pytest.approx((QUEUE_DEPTH + 10) * 10 * US)


# --- a vendor's extension: its own DMA scheduler (README, "Extending a chip") ---------------
RING_BANDWIDTH = 1e9  # bytes/s of the vendor's one DMA ring


class OneRingDMA(StreamEngine):
    """Host copies queue for one DMA ring served by the vendor's own simpy process."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        self.ring = simpy.Store(self.env)
        self.env.process(self.dma_scheduler())

    def dma_scheduler(self):
        while True:
            op, done = yield self.ring.get()
            yield self.env.timeout(op.nbytes / RING_BANDWIDTH)
            done.succeed()

    def _host_copy(self, dev, stream, op):
        yield from self._wait_issue(op.issued)
        start, done = self.env.now, self.env.event()
        yield self.ring.put((op, done))
        yield done
        self._finish(dev, stream, op, start, self.env.now, "dma ring")


def test_a_vendor_dma_scheduler_is_a_simpy_process():
    sim = Simulator("test-asic", engine=OneRingDMA)
    sim.h2d(0, 1000, stream=1)
    sim.h2d(0, 1000, stream=2)
    sim.launch(0, kernel(3), stream=3)  # kernels are untouched
    ends = [sim.event_time(sim.record_event(0, s)) for s in (1, 2, 3)]
    assert ends == pytest.approx([1 * US, 2 * US, 3 * US])  # the ring serves one at a time


def test_a_link_degraded_mid_transfer_slows_the_rest_of_it():
    sim = Simulator("test-asic", devices=2)
    sim.inject_fault("link_degraded", link=(0, 1), factor=0.5, at=50 * US, duration=1.0)
    forecast = sim.transfer(0, 1, 4_000_000)  # 100 us at 40 GB/s, as issued
    done = sim.record_event(0)
    # 2 MB move in the first 50 us; the other 2 MB at 20 GB/s take 100 us more.
    assert forecast == pytest.approx(ALPHA + 100 * US)
    assert sim.event_time(done) == pytest.approx(ALPHA + 150 * US)
