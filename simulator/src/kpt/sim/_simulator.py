"""The engine: devices, buffers, streams, events, transfers, faults and a trace in sim time.

The daemon drives one Simulator; it never sees values (the executor holds those). Times are
simulated seconds. Work runs as simpy processes (kpt.sim._streams: one per stream;
kpt.sim._collective_run: one per collective) over simpy resources and the Fabric's shared
channels (kpt.sim._fluid). The simulation is lazy: it runs when the host waits (synchronize,
read, an event's time, a collective's result, a full launch queue), so work issued later on
another stream can still overlap work issued before it, as on a GPU.

`now` is the host's clock: it moves when the host waits. Each device keeps a host issue clock:
every launch costs the host its profile's host_issue_s, so a stream of small eager ops is
host-bound as on a real GPU (0 in a profile: issuing is free). Issuing returns a forecast of
the op's end: its stream's order, its own cost and the device's faults, without contention
from other streams (the host cannot know that yet); synchronize() and event_time() return
what the simulation ran.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import simpy

from kpt.sim._collectives import run_collective
from kpt.sim._cost import op_timing
from kpt.sim._device import INF, Device
from kpt.sim._errors import (
    DeviceHangError,
    DeviceLostError,
    InvalidRequestError,
    LinkDownError,
    SimError,
)
from kpt.sim._events import DEFAULT_MAX_EVENTS, EventRing
from kpt.sim._fault_state import FaultState
from kpt.sim._faults import Fault, load_faults
from kpt.sim._fluid import Fabric
from kpt.sim._memory import Buffer
from kpt.sim._op_cost import GEMM_CLASSES, MATRIX_CLASSES, ROW_CLASSES, OpCost, normalize_class
from kpt.sim._profiles import Profile, load_profile, parse_profile_spec
from kpt.sim._streams import (
    COPY,
    D2H,
    H2D,
    KERNEL,
    MARKER,
    QUEUE_DEPTH,
    RANK,
    TRANSFER,
    WAIT,
    Marker,
    Op,
    StreamEngine,
)
from kpt.sim._topology import Topology
from kpt.sim._trace import DEFAULT_TRACE_EVENTS, Trace
from kpt.sim._uncertainty import Interval, step_interval

DEFAULT_HANG_TIMEOUT = 10.0  # simulated seconds the host waits on work that never ends
COST_CACHE_SIZE = 1 << 16
TILE = 128  # a thread block's output tile (GEMMs, flash attention), for compute-unit shares
BLOCK_BYTES = 16 * 1024  # bytes one block of an elementwise kernel moves


class Simulator(FaultState):
    """A cluster of simulated chips.

    profile: a name, a path, a Profile, a spec "h100-sxm:2,mi300x:2" or one entry per device.
    trace_events: trace events kept for dump_trace, the newest (older ones are counted).
    max_events: recorded events kept at once; an older event id is refused as expired.
    engine: the class whose simpy processes run the streams; a chip that schedules its work
    its own way subclasses StreamEngine (README, "Extending a chip").
    """

    def __init__(
        self,
        profile: str | Profile | Sequence[str | Profile] = "h100-sxm",
        devices: int | None = None,
        topology: str = "switch",
        nodes: int = 1,
        faults: str | Path | Iterable[Fault | dict] | None = None,
        seed: int = 0,
        hang_timeout: float = DEFAULT_HANG_TIMEOUT,
        trace: bool = True,
        trace_events: int = DEFAULT_TRACE_EVENTS,
        max_events: int = DEFAULT_MAX_EVENTS,
        engine: type[StreamEngine] = StreamEngine,
    ) -> None:
        chips = self._resolve_profiles(profile, devices)
        self._engine_class = engine
        self.devices = [Device(i, p) for i, p in enumerate(chips)]
        self.topology = Topology(chips, topology, nodes)
        self.links = self.topology.links
        self.seed = seed
        self.hang_timeout = hang_timeout
        self.trace = Trace(enabled=trace, capacity=trace_events)
        self._events = EventRing(max_events)
        self._configured_faults = load_faults(faults) if faults is not None else []
        self.reset()

    @staticmethod
    def _resolve_profiles(profile, devices: int | None) -> list[Profile]:
        if isinstance(profile, str) and ("," in profile or ":" in profile):
            names: list = parse_profile_spec(profile)
        elif isinstance(profile, str | Profile | Path):
            names = [profile] * (1 if devices is None else devices)
        else:
            names = list(profile)
        if devices is not None and len(names) != devices:
            raise InvalidRequestError(
                f"profile spec lists {len(names)} devices but devices={devices}; make them agree"
            )
        if not names or (devices is not None and devices < 1):
            raise InvalidRequestError(f"devices={devices!r}: need at least one device")
        return [load_profile(n) for n in names]

    # --- lifecycle ------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to t=0: no buffers, no work, configured faults re-armed."""
        self.env = simpy.Environment()
        self.links.reset()
        self.fabric = Fabric(self.env, self.links.bandwidth[: self.links.null])
        self._now = 0.0
        self._buffers: dict[int, Buffer] = {}
        self._next_buffer = 1
        self._events.clear()
        self._cost_cache: dict = {}
        self._rng = random.Random(self.seed)
        self._any_buffer_fault = False  # lets the hot paths skip buffer checks
        self._link_faults = False  # any link fault: collectives run step by step
        self._link_degraded: list[tuple[float, float, float, tuple[int, ...]]] = []
        for device in self.devices:
            device.memory.__init__(device.index, device.profile.hbm_bytes)
            device.reset_time()
            p, add = device.profile, self.fabric.add_channel
            bandwidth = p.host_link_bandwidth
            device.attach(self.env, add(p.hbm_bandwidth), add(bandwidth), add(bandwidth))
        self._engine = self._engine_class(self)
        self.trace.clear()
        for fault in self._configured_faults:
            self.inject_fault(fault)

    def now(self) -> float:
        return self._now

    def _advance(self, t: float) -> None:
        if t > self.env.now:
            self.env.run(until=t)
        self._now = max(self._now, t)

    def _run_until(self, event: simpy.Event) -> bool:
        """Run the simulation until `event` (the host waits for it); False if it never comes."""
        try:
            self.env.run(until=event)
        except RuntimeError:  # no events left: what it waits on hung
            if simpy.core.StopSimulation.callback in (event.callbacks or ()):
                event.callbacks.remove(simpy.core.StopSimulation.callback)
            return False
        self._now = max(self._now, self.env.now)
        return True

    def device_info(self) -> list[dict[str, Any]]:
        return [{"index": d.index, **d.profile.summary()} for d in self.devices]

    def _device(self, index: int) -> Device:
        try:
            if index < 0:
                raise IndexError
            return self.devices[index]
        except (IndexError, TypeError):
            raise InvalidRequestError(
                f"device {index!r} does not exist; devices are 0..{len(self.devices) - 1}"
            ) from None

    # --- memory ---------------------------------------------------------------------------
    def alloc(self, device: int, nbytes: int) -> int:
        """A buffer id; OutOfMemoryError names requested, free and total bytes."""
        dev = self._device(device)
        if dev.lost_at <= self._now:
            raise DeviceLostError(f"device {device} was lost; cannot allocate on it")
        buffer = dev.memory.allocate(self._next_buffer, nbytes)
        self._buffers[buffer.id] = buffer
        self._next_buffer += 1
        return buffer.id

    def free(self, buffer: int) -> None:
        found = self.buffer(buffer)
        self.devices[found.device].memory.release(found)
        del self._buffers[buffer]

    def buffer(self, buffer: int) -> Buffer:
        try:
            return self._buffers[buffer]
        except (KeyError, TypeError):
            raise InvalidRequestError(
                f"buffer {buffer!r} is not allocated (freed, never allocated, or from "
                "before a reset)"
            ) from None

    def memory_stats(self, device: int) -> dict[str, int]:
        return self._device(device).memory.stats()

    def reset_peak(self, device: int) -> None:
        """Start the device's peak-memory watermark again from what is allocated now."""
        self._device(device).memory.reset_peak()

    def _check_range(self, buffer: Buffer, offset: int, nbytes: int) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > buffer.nbytes:
            raise InvalidRequestError(
                f"range [{offset}, {offset + nbytes}) is outside buffer {buffer.id} of "
                f"{buffer.nbytes} bytes"
            )

    # --- compute --------------------------------------------------------------------------
    def launch(
        self,
        device: int,
        cost: OpCost,
        stream: int = 0,
        buffers: Sequence[int] = (),
        name: str | None = None,
        tensors: int | None = None,
        graph_node: bool = False,
        host_ops: int = 0,
    ) -> float:
        """Issue one op asynchronously; returns its forecast end (inf: never, device hung).

        tensors: tensor arguments of the launch, for the host model's per-tensor cost of
        optimizer kernels (default: one per buffer it touches). graph_node: the op is a node
        of a graph being replayed (a CUDA graph): the replay's one launch paid the host, so
        this op costs the host nothing and runs back to back with the ones before it.
        host_ops: ops the client dispatched since its last launch that launched nothing (views,
        allocations); a profile's [host] table charges each (host_op_us) before this launch."""
        dev = self.devices[device] if 0 <= device < len(self.devices) else self._device(device)
        if dev.ops >= dev.next_trigger:
            self._fire_op_triggers(dev)
        dev.ops += 1
        # Traces repeat the same ops: memoize their cost (bounded, cleared when full).
        key = (dev.profile, cost)
        timing = self._cost_cache.get(key)
        if timing is None:
            if len(self._cost_cache) > COST_CACHE_SIZE:
                self._cost_cache.clear()
            duration, hbm = op_timing(dev.profile, *cost)
            op_class = normalize_class(cost.op_class)
            timing = (duration, hbm, compute_units(dev.profile, cost), op_class)
            self._cost_cache[key] = timing
        p = dev.profile
        # The host issues ops one after another: the kernel exists once the host issued it,
        # and an idle device starts it queued_latency_s later; queued work hides that latency.
        issued = self._now if self._now > dev.host_free else dev.host_free
        if graph_node:  # a graph's nodes run back to back, without an eager stream's gap
            timing = (timing[0] - p.stream_gap_s, *timing[1:])
        elif dev.host is None:
            issued += p.host_issue_s
        else:
            count = len(buffers) if tensors is None else tensors
            issued += dev.host.launch_s(name or "", count, timing[3], cost.shape, host_ops)
        dev.host_free = issued
        latency = p.queued_latency_s
        start = issued + latency
        ready = dev.streams.get(stream, 0.0)
        if ready > start:
            start = ready
        end = start + timing[0] - latency
        op = Op(KERNEL, issued, timing, name or "", tuple(buffers))
        if dev.faulty or (buffers and self._any_buffer_fault):
            end = self._forecast_faults(dev, op, start, end)
        dev.streams[stream] = end
        self._submit(dev, stream, op)
        return end

    def host_work(self, device: int, seconds: float) -> None:
        """The host spends `seconds` on its own work (Python the simulator does not see run:
        scheduling, sampling) before it issues more to `device`; work already queued on the
        device goes on meanwhile, as on a real GPU."""
        dev = self._device(device)
        dev.host_free = max(self._now, dev.host_free) + seconds

    def _submit(self, dev: Device, stream: int, op: Op) -> None:
        self._engine.submit(dev, stream, op)
        if dev.queued >= QUEUE_DEPTH:
            # The launch queue is full: the host blocks until the device frees a slot, which
            # a batch of kernels in flight does at each kernel's end (kpt.sim._streams).
            if not dev.batch_ends:
                dev.space = self.env.event()
                self._run_until(dev.space)
            if dev.queued >= QUEUE_DEPTH and dev.batch_ends:
                dev.queued -= 1
                self._now = max(self._now, dev.batch_ends.popleft())

    def _forecast_faults(self, dev: Device, op: Op, start: float, end: float) -> float:
        """The forecast under the device's faults; an error it predicts is reported now (so
        it belongs to whoever issued the op) and not again when the op runs."""
        error: SimError | None = None
        if dev.faulty:
            end, error = dev.adjust(start, end - start)
        if error is None and op.buffers and self._any_buffer_fault:
            error = self._buffer_error(op.buffers, end)
        if error is not None:
            dev.fail(error)
            op.known_error = True
        return end

    # --- transfers ------------------------------------------------------------------------
    def write(self, buffer: int, offset: int, nbytes: int, stream: int = 0) -> float:
        """Host -> device copy over the host link, asynchronous on `stream`; returns its end."""
        buf = self.buffer(buffer)
        self._check_range(buf, offset, nbytes)
        return self.h2d(buf.device, nbytes, stream, (buffer,))

    def h2d(self, device: int, nbytes: int, stream: int = 0, buffers: Sequence[int] = ()) -> float:
        """A host -> device copy of nbytes (no buffer needed): host link + a DMA engine."""
        dev = self._device(device)
        p = dev.profile
        issued = max(self._now, dev.host_free)
        start = max(issued, dev.streams.get(stream, 0.0))
        end = start + p.host_link_latency_s + nbytes / p.host_link_bandwidth
        op = Op(H2D, issued, (), "h2d", tuple(buffers), nbytes)
        end = self._forecast_faults(dev, op, start, end)
        dev.streams[stream] = end
        self._submit(dev, stream, op)
        return end

    def read(self, buffer: int, offset: int, nbytes: int, stream: int = 0) -> float:
        """Device -> host copy; blocks the host until it and all prior work on the device
        are done, then raises any pending error. Returns the time it ended."""
        buf = self.buffer(buffer)
        self._check_range(buf, offset, nbytes)
        end = self.d2h(buf.device, nbytes, stream, (buffer,))
        if buf.fault_at <= end:
            raise self._buffer_error((buffer,), math.inf)
        return end

    def d2h(self, device: int, nbytes: int, stream: int = 0, buffers: Sequence[int] = ()) -> float:
        """A blocking device -> host copy of nbytes after all prior work on the device."""
        dev = self._device(device)
        self.synchronize(device)  # the copy follows everything issued to the device
        issued = max(self._now, dev.host_free)
        op = Op(D2H, issued, (), "d2h", tuple(buffers), nbytes)
        op.done = self.env.event()
        self._forecast_faults(dev, op, issued, issued)
        self._submit(dev, stream, op)
        if not self._run_until(op.done):
            self.synchronize(device)  # raises the hang
        dev.streams[stream] = self._now
        self.synchronize(device)
        return self._now

    def copy(
        self,
        src: int,
        dst: int,
        nbytes: int,
        src_offset: int = 0,
        dst_offset: int = 0,
        stream: int = 0,
    ) -> float:
        """Device -> device copy, on one chip or across links; asynchronous on the source
        device's `stream`. Returns its forecast end."""
        sbuf, dbuf = self.buffer(src), self.buffer(dst)
        self._check_range(sbuf, src_offset, nbytes)
        self._check_range(dbuf, dst_offset, nbytes)
        return self.transfer(sbuf.device, dbuf.device, nbytes, stream, buffers=(src, dst))

    def transfer(
        self,
        src_device: int,
        dst_device: int,
        nbytes: int,
        stream: int = 0,
        buffers: Sequence[int] = (),
    ) -> float:
        """A copy of nbytes from one device to another (or within one), no buffers needed."""
        dev = self._device(src_device)
        self._device(dst_device)
        issued = max(self._now, dev.host_free)
        start = max(issued, dev.streams.get(stream, 0.0))
        if src_device == dst_device:
            # Read and write both cross HBM, shared with the kernels' traffic.
            duration, hbm = op_timing(dev.profile, "copy", 0.0, 2.0 * nbytes)
            end = start + max(duration, dev.profile.kernel_launch_s + hbm)
            op = Op(COPY, issued, (duration, hbm), "d2d", tuple(buffers), nbytes)
        else:
            route = self.topology.route(src_device, dst_device)
            links = self.links
            bandwidth = min(links.bandwidth[i] * self._link_scale(i, start) for i in route)
            end = start + sum(links.latency[i] for i in route) + nbytes / bandwidth
            op = Op(TRANSFER, issued, (dst_device, route), "copy", tuple(buffers), nbytes)
            error = self._link_error(route, start)
            if error is not None:
                dev.fail(error)
                op.known_error, end = True, start
        end = self._forecast_faults(dev, op, start, end)
        dev.streams[stream] = end
        self._submit(dev, stream, op)
        return end

    # --- events and waiting ---------------------------------------------------------------
    def record_event(self, device: int, stream: int = 0) -> int:
        """An event that completes when the work issued to the stream so far has ended."""
        marker = Marker(0.0)
        self.record_into(marker, device, stream)
        return self._events.add(marker)

    def wait_event(self, event: int, device: int, stream: int = 0) -> None:
        """Later work on (device, stream) starts after the event: a cross-stream/device wait."""
        self.wait_for(self._events.get(event), device, stream)

    def wait_stream(self, device: int, stream: int, on: int) -> None:
        """Later work on (device, stream) starts after the work issued to (device, on) so far:
        an event recorded on `on` and waited on, with no id to keep."""
        marker = self.future_event()
        self.record_into(marker, device, on)
        self.wait_for(marker, device, stream)

    # An event whose place is not known yet (a collective waiting for its last rank): streams
    # may wait for it now; it is recorded into a stream later, or completed at once if what it
    # stood for failed. The holder keeps the marker itself: it has no id that could expire.
    def future_event(self) -> Marker:
        return Marker(0.0)

    def record_into(self, marker: Marker, device: int, stream: int = 0) -> None:
        """`marker` completes when the work issued to the stream so far has ended."""
        dev = self._device(device)
        # Recorded once the host has issued everything before it, as on a real GPU: the time
        # between two events includes the gaps where the device waited for the host.
        marker.forecast = max(self._now, dev.host_free, dev.streams.get(stream, 0.0))
        self._submit(dev, stream, Op(MARKER, max(self._now, dev.host_free), marker))

    def wait_for(self, marker: Marker, device: int, stream: int = 0) -> None:
        dev = self._device(device)
        if marker.forecast > dev.streams.get(stream, 0.0):
            dev.streams[stream] = marker.forecast
        if marker.time is None:
            self._submit(dev, stream, Op(WAIT, 0.0, marker))

    def complete_now(self, marker: Marker) -> None:
        """A future event whose work will never run: what waits on it goes on from now."""
        if marker.time is None:
            marker.time = self.env.now
            for waiter in marker.waiters:
                waiter.succeed()
            marker.waiters = []

    def event_time(self, event: int) -> float:
        """Sim seconds at which the event completes (inf if it never will). The host waits
        for it, as for an event's elapsed time on a GPU."""
        marker = self._events.get(event)
        if marker.time is None:
            waiter = self.env.event()
            marker.waiters.append(waiter)
            if not self._run_until(waiter):
                return INF
        return marker.time

    def _drain(self, targets: list[Device]) -> bool:
        """Run until the targets have finished their issued work; False if some never will."""
        waits = []
        for d in targets:
            if d.queued:
                if d.idle is None:
                    d.idle = self.env.event()
                waits.append(d.idle)
        return not waits or self._run_until(self.env.all_of(waits))

    def synchronize(self, device: int | None = None) -> float:
        """Wait (in sim time) for the work on one device or all; raise the first pending error."""
        targets = self.devices if device is None else [self._device(device)]
        if not self._drain(targets):
            hung = [d.index for d in targets if d.queued]
            self._advance(self._now + self.hang_timeout)
            raise DeviceHangError(
                f"device(s) {hung}: work never completed within the hang timeout of "
                f"{self.hang_timeout} s (simulated); reset the simulator or the device"
            )
        self._advance(max(d.host_free for d in targets))
        for d in targets:
            if d.host is not None:
                d.host.wait()
            if d.pending:
                raise d.pending.pop(0)
        return self._now

    def take_errors(self, device: int) -> list[SimError]:
        """The device's asynchronous errors raised since the last call, handed over once.

        A daemon calls this right after each op it issues for a client, so an error belongs to
        the client whose op caused it (as in a CUDA context), not to whoever synchronizes first.
        Errors the forecast predicts are there at once; others appear once the simulation runs.
        """
        dev = self._device(device)
        errors, dev.pending = dev.pending, []
        return errors

    # --- collectives and trace ------------------------------------------------------------
    def collective(self, kind: str, nbytes: int, devices: Sequence[int] | None = None, **options):
        """Issue a collective over links; see kpt.sim._collectives.run_collective."""
        return run_collective(self, kind, nbytes, devices, **options)

    def _issue_collective(self, run) -> None:
        result = run.result
        result._run = run
        devs = [self.devices[d] for d in result.devices]
        issued = [max(self._now, d.host_free) for d in devs]
        start = max(max(i, d.streams.get(run.stream, 0.0)) for i, d in zip(issued, devs))
        lost = [pos for pos, d in enumerate(devs) if d.lost_at <= start]
        if lost:
            run._fail(run._lost_error(lost, devs), devs)
        for pos, d in enumerate(devs):
            d.streams[run.stream] = start + result.predicted
            self._submit(d, run.stream, Op(RANK, issued[pos], (run, pos)))
        self.env.process(run.process())

    def _wait_collective(self, result) -> None:
        self._run_until(result._run.finished)

    def dump_trace(self, path: str | Path) -> None:
        """Write a Chrome trace JSON (open it in Perfetto): a track per stream and per link.
        The host waits for the work issued so far, so the trace holds all of it."""
        self._drain(self.devices)
        self.trace.dump(path, [d.profile.name for d in self.devices])

    def summary(self) -> list[dict[str, Any]]:
        """Per device: busy seconds (by op class too), when its work ended, when the host had
        issued it (host_end_s: near end_s, the host set the pace), ops, memory peak. The host
        waits for the work issued so far first."""
        self._drain(self.devices)
        return [
            {
                "device": d.index,
                "profile": d.profile.name,
                "ops": d.ops,
                "busy_s": d.busy,
                "busy_by_class": dict(d.busy_by_class),
                "end_s": d.finished_at(),
                "host_end_s": d.host_free,
                "peak_bytes": d.memory.peak,
            }
            for d in self.devices
        ]

    def interval(self, device: int | None = None) -> Interval:
        """The simulated end of the work so far with its calibration interval: each op class's
        busy time widened by the profile's band for it (kpt.sim._uncertainty)."""
        targets = self.devices if device is None else [self._device(device)]
        self._drain(targets)
        last = max(targets, key=lambda d: d.finished_at())
        return step_interval(last.profile, last.finished_at(), last.busy_by_class)

    def _link_down_error(self, link: int, what: str = "the transfer") -> LinkDownError:
        links = self.links
        return LinkDownError(
            f"{what}: link {links.names[link]} is down (since t={links.down_at[link] * 1e6:.3f}"
            " us); it failed: route around it or wait for the link to come back"
        )


def compute_units(profile: Profile, cost: OpCost) -> int:
    """Compute units (SMs) a kernel occupies: its thread blocks, at most all of them.

    Blocks: GEMM-like output tiles of TILE x TILE; flash attention's (head, TILE queries);
    a block per row of row-wise ops, per output of reductions and per chunk of multi-tensor
    kernels; else BLOCK_BYTES each. Two kernels share the chip only when their blocks fit in
    it together."""
    units = profile.compute_units
    op_class, shape = normalize_class(cost.op_class), cost.shape
    if not shape and op_class in MATRIX_CLASSES:
        return units  # costed at the whole chip's rate: it fills every unit
    if shape and (op_class in GEMM_CLASSES or op_class == "conv") and len(shape) >= 3:
        m, n, k = shape[:3]
        batch = cost.flops / (2.0 * m * n * k) if m and n and k else 1.0
        blocks = math.ceil(m / TILE) * math.ceil(n / TILE) * max(1.0, batch)
    elif shape and op_class == "attention":
        blocks = shape[0] * math.ceil(shape[1] / TILE)
    elif shape and (op_class in ROW_CLASSES or op_class in ("reduction", "multi_tensor")):
        blocks = shape[0]
    else:
        blocks = math.ceil(cost.bytes / BLOCK_BYTES)
    return int(max(1, min(units, blocks)))
