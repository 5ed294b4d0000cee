"""Streams as simpy processes: each (device, stream) runs its queue of issued work in order.

A kernel waits for its issue time (plus the launch latency an idle device pays), takes its
share of the chip's compute units from a Container, and runs for its cost while its memory
traffic flows through the chip's HBM channel, shared with DMA copies and other kernels. Copies
take a DMA engine and flow over the host link, HBM or chip links. A fault interrupts the
work in flight (a lost device ends it with an error; a hang never lets it finish).

A run of kernels on a chip where nothing else is queued, running or flowing is uncontended:
its timeline is arithmetic, so the process computes it and waits once for its end (at most
BATCH_MAX kernels, so a host blocked on a full queue resumes in time). Events stay simpy's.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import simpy

if TYPE_CHECKING:
    from kpt.sim._device import Device
    from kpt.sim._simulator import Simulator

KERNEL, COPY, TRANSFER, H2D, D2H, MARKER, WAIT, RANK = range(8)
QUEUE_DEPTH = 1024  # ops a device queues before the host blocks (CUDA's launch queue)
BATCH_MAX = 256
LOST, HANG = "device_lost", "hang"  # interrupt causes


class Op:
    """One unit of issued work. payload by kind: KERNEL (duration, hbm_busy, sms, op_class);
    COPY (duration, hbm_busy); TRANSFER (dst, route); H2D / D2H (); MARKER / WAIT (Marker);
    RANK (CollectiveRun, position)."""

    __slots__ = ("buffers", "done", "issued", "kind", "known_error", "name", "nbytes", "payload")

    def __init__(self, kind, issued, payload=(), name="", buffers=(), nbytes=0.0) -> None:
        self.kind = kind
        self.issued = issued
        self.payload = payload
        self.name = name
        self.buffers = buffers
        self.nbytes = nbytes
        self.known_error = False  # the forecast already reported this op's error at issue
        self.done: simpy.Event | None = None  # only for ops the host waits on (d2h)


class Marker:
    """A recorded event: its time once its stream reached it, and the events waiting on it."""

    __slots__ = ("forecast", "time", "waiters")

    def __init__(self, forecast: float) -> None:
        self.forecast = forecast  # the forecast clocks' time for it, at record time
        self.time: float | None = None
        self.waiters: list[simpy.Event] = []


class StreamEngine:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.env = sim.env
        self.fabric = sim.fabric

    # --- issuing --------------------------------------------------------------------------
    def submit(self, dev: Device, stream: int, op: Op) -> None:
        queue = dev.queues.get(stream)
        if queue is None:
            queue = dev.queues[stream] = deque()
            dev.wakeups[stream] = None
            dev.processes[stream] = self.env.process(self._stream(dev, stream, queue))
        queue.append(op)
        dev.queued += 1
        wake = dev.wakeups[stream]
        if wake is not None:
            dev.wakeups[stream] = None
            wake.succeed()

    def _retire(self, dev: Device, count: int = 1) -> None:
        dev.queued -= count
        if dev.queued == 0 and dev.idle is not None:
            idle, dev.idle = dev.idle, None
            idle.succeed()
        if dev.space is not None and dev.queued < QUEUE_DEPTH:
            space, dev.space = dev.space, None
            space.succeed()

    # --- the stream process ---------------------------------------------------------------
    def _stream(self, dev: Device, stream: int, queue: deque):
        env = self.env
        run = {KERNEL: self._kernel, COPY: self._copy, TRANSFER: self._transfer,
               H2D: self._host_copy, D2H: self._host_copy, MARKER: self._marker,
               WAIT: self._wait, RANK: self._rank}  # fmt: skip
        while True:
            if not queue:
                wake = dev.wakeups[stream] = env.event()
                yield wake
                continue
            op = queue[0]
            if op.kind == KERNEL and self._alone(dev, queue):
                yield from self._kernel_batch(dev, stream, queue)
                continue
            yield from run[op.kind](dev, stream, op)
            queue.popleft()
            if op.done is not None:
                op.done.succeed()
            self._retire(dev)

    def _alone(self, dev: Device, queue: deque) -> bool:
        """Nothing else on the chip can contend with this stream's kernels."""
        return (
            dev.queued == len(queue)
            and not dev.faulty
            and not self.sim._any_buffer_fault
            and dev.sms.level == dev.sms.capacity
            and self.fabric.idle((dev.hbm_channel,))
        )

    def _wait_issue(self, ready: float, dev: Device | None = None, stream: int = 0):
        """Wait until the host has issued the op; on a hung device it never starts."""
        if ready > self.env.now:
            yield self.env.timeout(ready - self.env.now)
        if dev is not None and self.env.now >= dev.hang_at:
            yield from self._hang(dev, stream)

    def _hang(self, dev: Device, stream: int):
        dev.ended[stream] = math.inf
        yield self.env.event()  # never triggered: the stream never moves again

    # --- kernels --------------------------------------------------------------------------
    def _kernel_batch(self, dev: Device, stream: int, queue: deque):
        env = self.env
        latency = dev.profile.queued_latency_s
        t = env.now
        spans = []
        for op in queue:
            if op.kind != KERNEL or len(spans) == BATCH_MAX:
                break
            start = op.issued + latency
            if t > start:
                start = t
            t = start + op.payload[0] - latency
            spans.append((op, start, t))
        # A host blocked on a full queue may take a slot as each kernel of the batch ends.
        dev.batch_ends = deque(end for _, _, end in spans)
        if dev.space is not None:  # the host waits for a slot: it can take one of these
            space, dev.space = dev.space, None
            space.succeed()
        if t > env.now:
            yield env.timeout(t - env.now)
        for op, start, end in spans:
            self._kernel_done(dev, stream, op, start, end)
        for _ in spans:
            queue.popleft()
        taken = len(spans) - len(dev.batch_ends)
        dev.batch_ends = deque()
        self._retire(dev, len(spans) - taken)

    def _kernel(self, dev: Device, stream: int, op: Op):
        env = self.env
        duration, hbm_busy, sms, _ = op.payload
        latency = dev.profile.queued_latency_s
        yield from self._wait_issue(op.issued + latency, dev, stream)
        yield dev.sms.get(sms)
        start = env.now
        if start < dev.lost_at:
            work = (duration - latency) * dev.slowdown(start)
            waits, flows = [env.timeout(work)], []
            if hbm_busy:
                hbm = self.fabric.flow(hbm_busy * dev.profile.hbm_bandwidth, (dev.hbm_channel,))
                waits.append(hbm.done)
                flows.append(hbm)
            yield from self._interruptible(dev, stream, op, start + work, waits, flows)
        dev.sms.put(sms)
        self._kernel_done(dev, stream, op, start, env.now)

    def _interruptible(self, dev, stream, op, planned_end, waits, flows=()):
        """Wait for work in flight; a fault interrupts it (kpt.sim._fault_state's strike)."""
        dev.running[stream] = planned_end
        try:
            yield waits[0] if len(waits) == 1 else self.env.all_of(waits)
        except simpy.Interrupt as fault:
            for flow in flows:
                self.fabric.cancel(flow)
            if fault.cause == HANG:
                yield from self._hang(dev, stream)
            elif not op.known_error:
                dev.fail(dev.lost_error())
                op.known_error = True
        finally:
            dev.running.pop(stream, None)

    def _kernel_done(self, dev: Device, stream: int, op: Op, start: float, end: float) -> None:
        dev.ended[stream] = end
        busy = end - start
        dev.busy += busy
        op_class = op.payload[3]
        dev.busy_by_class[op_class] = dev.busy_by_class.get(op_class, 0.0) + busy
        self._finish(dev, stream, op, start, end, op.name or op_class)

    def _finish(self, dev: Device, stream: int, op: Op, start: float, end: float, name: str):
        dev.ended[stream] = end
        if not op.known_error:
            if start >= dev.lost_at or end > dev.lost_at:
                dev.fail(dev.lost_error())
            elif op.buffers and self.sim._any_buffer_fault:
                error = self.sim._buffer_error(op.buffers, end)
                if error is not None:
                    dev.fail(error)
        if self.sim.trace.enabled:
            self.sim.trace.add(dev.index, f"stream {stream}", name, start, end)

    # --- copies ---------------------------------------------------------------------------
    def _copy(self, dev: Device, stream: int, op: Op):
        """On-chip copy: a DMA engine; read and write both cross HBM after the launch."""
        env = self.env
        duration, hbm_busy = op.payload
        yield from self._wait_issue(op.issued, dev, stream)
        with dev.dma.request() as engine:
            yield engine
            start = env.now
            launch = dev.profile.kernel_launch_s
            yield env.timeout(launch)
            hbm = self.fabric.flow(hbm_busy * dev.profile.hbm_bandwidth, (dev.hbm_channel,))
            rest = env.timeout(max(0.0, duration - launch))
            yield from self._interruptible(
                dev, stream, op, start + duration, [rest, hbm.done], [hbm]
            )
        self._finish(dev, stream, op, start, env.now, op.name or "d2d")

    def _transfer(self, dev: Device, stream: int, op: Op):
        """Chip to chip: a DMA engine, then the bytes over every link of the route at once."""
        env = self.env
        _, route = op.payload
        yield from self._wait_issue(op.issued, dev, stream)
        with dev.dma.request() as engine:
            yield engine
            start = env.now
            links = self.sim.links
            down = [i for i in route if links.down_at[i] <= start < links.up_at[i]]
            if down:
                if not op.known_error:
                    dev.fail(self.sim._link_down_error(down[0]))
                op.known_error = True
            else:
                flow = self.fabric.flow(op.nbytes, route)
                yield from self._interruptible(dev, stream, op, math.inf, [flow.done], [flow])
                if self.sim.trace.enabled:
                    for i in route:
                        name = f"{dev.index}->{op.payload[0]}"
                        self.sim.trace.add_link(links.names[i], name, start, env.now)
                yield env.timeout(float(sum(links.latency[i] for i in route)))
        self._finish(dev, stream, op, start, env.now, op.name or "copy")

    def _host_copy(self, dev: Device, stream: int, op: Op):
        """Host <-> device: a DMA engine, the host link one way, and HBM at the chip."""
        env = self.env
        p = dev.profile
        yield from self._wait_issue(op.issued, dev, stream)
        with dev.dma.request() as engine:
            yield engine
            start = env.now
            link = dev.h2d_channel if op.kind == H2D else dev.d2h_channel
            wire = self.fabric.flow(op.nbytes, (link,))
            hbm = self.fabric.flow(op.nbytes, (dev.hbm_channel,))
            flows = [wire, hbm]
            yield from self._interruptible(dev, stream, op, math.inf, [wire.done, hbm.done], flows)
            yield env.timeout(p.host_link_latency_s)
        self._finish(dev, stream, op, start, env.now, "h2d" if op.kind == H2D else "d2h")

    # --- events and collectives -----------------------------------------------------------
    def _marker(self, dev: Device, stream: int, op: Op):
        yield from self._wait_issue(op.issued)
        marker = op.payload
        marker.time = self.env.now
        for waiter in marker.waiters:
            waiter.succeed()
        marker.waiters = []

    def _wait(self, dev: Device, stream: int, op: Op):
        marker = op.payload
        if marker.time is None:
            waiter = self.env.event()
            marker.waiters.append(waiter)
            yield waiter

    def _rank(self, dev: Device, stream: int, op: Op):
        run, position = op.payload
        yield from self._wait_issue(op.issued, dev, stream)
        run.arrivals[position].succeed(self.env.now)
        yield run.rank_done[position]
        dev.ended[stream] = self.env.now
