"""The engine: devices, buffers, streams, events, transfers, faults and a trace in sim time.

The daemon drives one Simulator; it never sees values (the executor holds those).
Times are simulated seconds. `now` is the host's clock: it moves when the host waits
(read, synchronize); work issued asynchronously starts no earlier than `now`. Each device also
keeps a host issue clock: every launch costs the host its profile's host_issue_s, so a stream
of small eager ops is host-bound as on a real GPU (0 in a profile: issuing is free).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import simpy

from kpt.sim._cost import OpCost, op_timing
from kpt.sim._device import INF, Device
from kpt.sim._errors import (
    DeviceHangError,
    DeviceLostError,
    InvalidRequestError,
    LinkDownError,
    MemoryFaultError,
    SimError,
)
from kpt.sim._events import DEFAULT_MAX_EVENTS, EventRing
from kpt.sim._faults import Fault, load_faults
from kpt.sim._memory import Buffer
from kpt.sim._profiles import Profile, load_profile, parse_profile_spec
from kpt.sim._topology import Topology
from kpt.sim._trace import Trace

DEFAULT_HANG_TIMEOUT = 10.0  # simulated seconds the host waits on work that never ends
COST_CACHE_SIZE = 1 << 16


class Simulator:
    """A cluster of simulated chips.

    profile: a name, a path, a Profile, a spec "h100-sxm:2,mi300x:2" or one entry per device.
    max_events: recorded events kept at once; an older event id is refused as expired.
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
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        chips = self._resolve_profiles(profile, devices)
        self.devices = [Device(i, p) for i, p in enumerate(chips)]
        self.topology = Topology(chips, topology, nodes)
        self.links = self.topology.links
        self.seed = seed
        self.hang_timeout = hang_timeout
        self.trace = Trace(enabled=trace)
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
        self._now = 0.0
        self._buffers: dict[int, Buffer] = {}
        self._next_buffer = 1
        self._events.clear()
        self._cost_cache: dict = {}
        self._rng = random.Random(self.seed)
        self._any_buffer_fault = False  # lets launch() skip buffer checks when none is faulty
        for device in self.devices:
            device.memory.__init__(device.index, device.profile.hbm_bytes)
            device.reset_time()
        self.links.reset()
        self._link_degraded: list[tuple[float, float, float, tuple[int, ...]]] = []
        self.trace.clear()
        for fault in self._configured_faults:
            self.inject_fault(fault)

    def now(self) -> float:
        return self._now

    def _advance(self, t: float) -> None:
        if t > self._now:
            self._now = t
            self.env.run(until=t)

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
    ) -> float:
        """Issue one op asynchronously; returns when it will end (inf: never, device hung)."""
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
            timing = self._cost_cache[key] = op_timing(dev.profile, *cost)
        duration, hbm = timing
        p = dev.profile
        # The host issues ops one after another: the kernel exists once the host issued it,
        # and an idle device starts it launch_latency_s later; queued work hides that latency.
        issued = self._now if self._now > dev.host_free else dev.host_free
        issued += p.host_issue_s
        dev.host_free = issued
        latency = p.launch_latency_s
        start = issued + latency
        ready = dev.streams.get(stream, 0.0)
        if ready > start:
            start = ready
        if dev.compute_free > start:
            start = dev.compute_free
        end = start + duration - latency
        if hbm:
            # Memory traffic queues behind other work on HBM (DMA copies): bandwidth is shared.
            mem_start = start + p.kernel_launch_s - latency
            if dev.hbm_free > mem_start:
                mem_start = dev.hbm_free
                if mem_start + hbm > end:
                    end = mem_start + hbm
            dev.hbm_free = mem_start + hbm
        if dev.faulty:
            end, error = dev.adjust(start, end - start)
            if error is not None:
                dev.fail(error)
        if buffers and self._any_buffer_fault:
            self._check_buffers(buffers, end, dev)
        dev.compute_free = end
        dev.streams[stream] = end
        dev.busy += end - start
        if self.trace.enabled:
            self.trace.add(device, f"stream {stream}", name or cost.op_class, start, end)
        return end

    def _check_buffers(self, buffers: Sequence[int], end: float, dev: Device) -> None:
        for b in buffers:
            found = self._buffers.get(b)
            if found is not None and found.fault_at < end:
                dev.fail(
                    MemoryFaultError(
                        f"uncorrectable ECC error in buffer {b} on device {found.device} "
                        f"(at t={found.fault_at * 1e6:.3f} us); its contents are lost: "
                        "free it and recompute"
                    )
                )

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
        engine = min(range(len(dev.dma_free)), key=dev.dma_free.__getitem__)
        start = max(self._now, dev.host_free, dev.streams.get(stream, 0.0), dev.h2d_free)
        start = max(start, dev.dma_free[engine])
        end = start + p.host_link_latency_s + nbytes / p.host_link_bandwidth
        dev.h2d_free = dev.dma_free[engine] = end
        dev.hbm_free = max(dev.hbm_free, start) + nbytes / p.hbm_bandwidth
        return self._finish_transfer(dev, stream, start, end, buffers, "h2d")

    def read(self, buffer: int, offset: int, nbytes: int, stream: int = 0) -> float:
        """Device -> host copy; blocks the host until it and all prior work on the device
        are done, then raises any pending error. Returns the time it ended."""
        buf = self.buffer(buffer)
        self._check_range(buf, offset, nbytes)
        end = self.d2h(buf.device, nbytes, stream, (buffer,))
        if buf.fault_at <= end:
            raise MemoryFaultError(
                f"uncorrectable ECC error in buffer {buffer} on device {buf.device}: its "
                "contents are lost; free it and recompute"
            )
        return end

    def d2h(self, device: int, nbytes: int, stream: int = 0, buffers: Sequence[int] = ()) -> float:
        """A blocking device -> host copy of nbytes after all prior work on the device."""
        dev = self._device(device)
        p = dev.profile
        start = max(self._now, dev.host_free, dev.last_end(), dev.d2h_free)
        if start == INF:
            self.synchronize(device)  # raises DeviceHangError
        end = start + p.host_link_latency_s + nbytes / p.host_link_bandwidth
        dev.d2h_free = end
        end = self._finish_transfer(dev, stream, start, end, buffers, "d2h")
        self.synchronize(device)
        return end

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
        device's `stream`. Returns when it ends."""
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
        engine = min(range(len(dev.dma_free)), key=dev.dma_free.__getitem__)
        start = max(self._now, dev.host_free, dev.streams.get(stream, 0.0), dev.dma_free[engine])
        if src_device == dst_device:
            # Read and write both cross HBM, shared with the kernels' traffic.
            duration, hbm = op_timing(dev.profile, "copy", 0.0, 2.0 * nbytes)
            mem_start = max(start + dev.profile.kernel_launch_s, dev.hbm_free)
            end = max(start + duration, mem_start + hbm)
            dev.hbm_free = mem_start + hbm
            dev.dma_free[engine] = end
            return self._finish_transfer(dev, stream, start, end, buffers, "d2d")
        route = self.topology.route(src_device, dst_device)
        links = self.links
        start = max(start, max(links.free_at[i] for i in route))
        error = self._link_error(route, start)
        bandwidth = min(links.bandwidth[i] * self._link_scale(i, start) for i in route)
        end = start + sum(links.latency[i] for i in route) + nbytes / bandwidth
        for i in route:
            occupied = nbytes / (links.bandwidth[i] * self._link_scale(i, start))
            links.free_at[i] = start + occupied
            links.busy[i] += occupied
            if self.trace.enabled:
                self.trace.add_link(
                    links.names[i], f"{src_device}->{dst_device}", start, start + occupied
                )
        dev.dma_free[engine] = end
        if error is not None:
            dev.fail(error)
            end = start
        return self._finish_transfer(dev, stream, start, end, buffers, "copy")

    def _link_error(self, route: Iterable[int], start: float) -> LinkDownError | None:
        links = self.links
        for i in route:
            if links.down_at[i] <= start < links.up_at[i]:
                return LinkDownError(
                    f"link {links.names[i]} is down (since t={links.down_at[i] * 1e6:.3f} us); "
                    "the transfer failed: route around it or wait for it to come back"
                )
        return None

    def _link_scale(self, link: int, start: float) -> float:
        scale = 1.0
        for since, until, factor, ids in self._link_degraded:
            if since <= start < until and link in ids:
                scale *= factor
        return scale

    def _finish_transfer(self, dev, stream, start, end, buffers, name) -> float:
        if dev.faulty:
            end, error = dev.adjust(start, end - start)
            if error is not None:
                dev.fail(error)
        if buffers and self._any_buffer_fault:
            self._check_buffers(buffers, end, dev)
        dev.streams[stream] = end
        if self.trace.enabled:
            self.trace.add(dev.index, f"stream {stream}", name, start, end)
        return end

    # --- events and waiting ---------------------------------------------------------------
    def record_event(self, device: int, stream: int = 0) -> int:
        """An event that completes when the work issued to the stream so far has ended."""
        dev = self._device(device)
        # Recorded once the host has issued everything before it, as on a real GPU: the time
        # between two events includes the gaps where the device waited for the host.
        return self._events.add(max(self._now, dev.host_free, dev.streams.get(stream, 0.0)))

    def _event(self, event: int) -> float:
        return self._events.time(event)

    def wait_event(self, event: int, device: int, stream: int = 0) -> None:
        """Later work on (device, stream) starts after the event: a cross-stream/device wait."""
        t = self._event(event)
        dev = self._device(device)
        if t > dev.streams.get(stream, 0.0):
            dev.streams[stream] = t

    def event_time(self, event: int) -> float:
        """Sim seconds at which the event completes (inf if it never will)."""
        return self._event(event)

    def synchronize(self, device: int | None = None) -> float:
        """Wait (in sim time) for the work on one device or all; raise the first pending error."""
        targets = self.devices if device is None else [self._device(device)]
        end = max((max(d.last_end(), d.host_free) for d in targets), default=0.0)
        if end == INF:
            hung = [d.index for d in targets if d.last_end() == INF]
            self._advance(self._now + self.hang_timeout)
            raise DeviceHangError(
                f"device(s) {hung}: work never completed within the hang timeout of "
                f"{self.hang_timeout} s (simulated); reset the simulator or the device"
            )
        self._advance(end)
        for d in targets:
            if d.pending:
                raise d.pending.pop(0)
        return self._now

    def take_errors(self, device: int) -> list[SimError]:
        """The device's asynchronous errors raised since the last call, handed over once.

        A daemon calls this right after each op it issues for a client, so an error belongs to
        the client whose op caused it (as in a CUDA context), not to whoever synchronizes first.
        """
        dev = self._device(device)
        errors, dev.pending = dev.pending, []
        return errors

    # --- faults ---------------------------------------------------------------------------
    def inject_fault(self, fault: Fault | str | dict | None = None, **fields: Any) -> Fault:
        """Apply a fault now, at a later sim time (`at`), or after N ops (`after_ops`).

        inject_fault("hang", device=0) or inject_fault(Fault(...)) or a fault-file dict."""
        if isinstance(fault, str):
            fault = Fault(kind=fault, **fields)
        elif isinstance(fault, dict):
            fault = Fault.from_dict(fault)
        elif not isinstance(fault, Fault):
            raise InvalidRequestError(
                f"inject_fault needs a Fault, a kind or a dict, got {fault!r}"
            )
        if fault.kind.startswith("link_"):
            self._apply_link_fault(fault)
            return fault
        dev = self._device(fault.device)
        if fault.after_ops is not None and fault.after_ops > dev.ops:
            dev.op_triggers.append((fault.after_ops, fault))
            dev.op_triggers.sort(key=lambda pair: pair[0])
            dev.next_trigger = dev.op_triggers[0][0]
            return fault
        at = fault.at if fault.at is not None else max(self._now, dev.compute_free)
        self._apply_device_fault(dev, fault, at)
        return fault

    def _fire_op_triggers(self, dev: Device) -> None:
        while dev.op_triggers and dev.op_triggers[0][0] <= dev.ops:
            _, fault = dev.op_triggers.pop(0)
            at = max(self._now, max(dev.streams.values(), default=0.0) if dev.streams else 0.0)
            self._apply_device_fault(dev, fault, at if at != INF else self._now)
        dev.next_trigger = dev.op_triggers[0][0] if dev.op_triggers else INF

    def _apply_device_fault(self, dev: Device, fault: Fault, at: float) -> None:
        dev.faulty = True
        kind = fault.kind
        if kind == "device_lost":
            dev.lost_at = min(dev.lost_at, at)
            if dev.last_end() > at:
                dev.fail(dev.lost_error())
        elif kind == "hang":
            dev.hang_at = min(dev.hang_at, at)
            for s, end in dev.streams.items():
                if end > at:
                    dev.streams[s] = INF
            if dev.compute_free > at:
                dev.compute_free = INF
        elif kind == "straggler":
            dev.slowdowns.append((at, at + fault.duration, fault.factor))
        elif kind == "thermal_throttle":
            dev.slowdowns.append((at, at + fault.duration, 1.0 / fault.factor))
        elif kind == "memory_error":
            self._apply_memory_error(dev, fault, at)

    def _apply_memory_error(self, dev: Device, fault: Fault, at: float) -> None:
        if fault.buffer is not None:
            target = self.buffer(fault.buffer)
            if target.device != dev.index:
                raise InvalidRequestError(
                    f"memory_error: buffer {fault.buffer} lives on device {target.device}, "
                    f"not device {dev.index}"
                )
        else:
            live = sorted(dev.memory.buffers)
            if not live:
                raise InvalidRequestError(
                    f"memory_error on device {dev.index}: it holds no buffers to corrupt; "
                    "schedule it after an allocation (after_ops) or name a buffer"
                )
            target = self._buffers[self._rng.choice(live)]
        target.fault_at = min(target.fault_at, at)
        self._any_buffer_fault = True

    def _apply_link_fault(self, fault: Fault) -> None:
        a, b = fault.link
        ids = tuple(sorted(set(self.topology.route(a, b)) | set(self.topology.route(b, a))))
        at = fault.at if fault.at is not None else self._now
        if fault.kind == "link_down":
            for i in ids:
                self.links.down_at[i] = min(self.links.down_at[i], at)
                self.links.up_at[i] = at + fault.duration
        else:
            self._link_degraded.append((at, at + fault.duration, fault.factor, ids))

    # --- collectives and trace ------------------------------------------------------------
    def collective(self, kind: str, nbytes: int, devices: Sequence[int] | None = None, **options):
        """Run a collective as link transfers; see kpt.sim._collectives.run_collective."""
        from kpt.sim._collectives import run_collective

        return run_collective(self, kind, nbytes, devices, **options)

    def dump_trace(self, path: str | Path) -> None:
        """Write a Chrome trace JSON (open it in Perfetto): a track per stream and per link."""
        self.trace.dump(path, [d.profile.name for d in self.devices])

    def summary(self) -> list[dict[str, Any]]:
        """Per device: busy seconds, last end time, ops issued, memory peak."""
        return [
            {
                "device": d.index,
                "profile": d.profile.name,
                "ops": d.ops,
                "busy_s": d.busy,
                "end_s": d.last_end(),
                "peak_bytes": d.memory.peak,
            }
            for d in self.devices
        ]
