"""Faults on the Simulator: what each kind changes, and the simpy processes that strike.

A fault sets state the forecasts read (a device lost or hung from a time, slowdown windows,
link windows, a corrupted buffer) and, for what happens at a moment, a simpy process that
acts then: a lost or hung device interrupts the work in flight on it (kpt.sim._streams), a
degraded link changes its channel's capacity in the Fabric and restores it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kpt.sim._device import INF, Device
from kpt.sim._errors import InvalidRequestError, LinkDownError, MemoryFaultError
from kpt.sim._faults import Fault
from kpt.sim._streams import HANG, LOST

if TYPE_CHECKING:
    import random

    import simpy

    from kpt.sim._fluid import Fabric
    from kpt.sim._memory import Buffer
    from kpt.sim._topology import Links, Topology


class FaultState:
    """Mixin of Simulator: inject_fault and the fault checks its forecasts use."""

    env: simpy.Environment
    fabric: Fabric
    links: Links
    topology: Topology
    devices: list[Device]
    _now: float
    _buffers: dict[int, Buffer]
    _rng: random.Random
    _any_buffer_fault: bool
    _link_faults: bool
    _link_degraded: list[tuple[float, float, float, tuple[int, ...]]]

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
        dev = self._device(fault.device)  # type: ignore[attr-defined]
        if fault.after_ops is not None and fault.after_ops > dev.ops:
            dev.op_triggers.append((fault.after_ops, fault))
            dev.op_triggers.sort(key=lambda pair: pair[0])
            dev.next_trigger = dev.op_triggers[0][0]
            return fault
        at = fault.at if fault.at is not None else max(self._now, _finite_end(dev, self._now))
        self._apply_device_fault(dev, fault, at)
        return fault

    def _fire_op_triggers(self, dev: Device) -> None:
        while dev.op_triggers and dev.op_triggers[0][0] <= dev.ops:
            _, fault = dev.op_triggers.pop(0)
            self._apply_device_fault(dev, fault, max(self._now, _finite_end(dev, self._now)))
        dev.next_trigger = dev.op_triggers[0][0] if dev.op_triggers else INF

    def _apply_device_fault(self, dev: Device, fault: Fault, at: float) -> None:
        dev.faulty = True
        kind = fault.kind
        if kind == "device_lost":
            dev.lost_at = min(dev.lost_at, at)
            if dev.last_end() > at:
                dev.fail(dev.lost_error())
            self.env.process(self._strike(dev, LOST, at))
        elif kind == "hang":
            dev.hang_at = min(dev.hang_at, at)
            for s, end in dev.streams.items():
                if end > at:
                    dev.streams[s] = INF
            self.env.process(self._strike(dev, HANG, at))
        elif kind == "straggler":
            dev.slowdowns.append((at, at + fault.duration, fault.factor))
        elif kind == "thermal_throttle":
            dev.slowdowns.append((at, at + fault.duration, 1.0 / fault.factor))
        elif kind == "memory_error":
            self._apply_memory_error(dev, fault, at)

    def _strike(self, dev: Device, cause: str, at: float):
        """At `at`, interrupt the device's work in flight that would end after it."""
        yield self.env.timeout(max(0.0, at - self.env.now))
        for stream, planned_end in list(dev.running.items()):
            if planned_end > at:
                dev.processes[stream].interrupt(cause)

    def _apply_memory_error(self, dev: Device, fault: Fault, at: float) -> None:
        if fault.buffer is not None:
            target = self.buffer(fault.buffer)  # type: ignore[attr-defined]
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
        self._link_faults = True
        if fault.kind == "link_down":
            for i in ids:
                self.links.down_at[i] = min(self.links.down_at[i], at)
                self.links.up_at[i] = at + fault.duration
        else:
            self._link_degraded.append((at, at + fault.duration, fault.factor, ids))
            self.env.process(self._degrade(ids, fault.factor, at, fault.duration))

    def _degrade(self, ids: tuple[int, ...], factor: float, at: float, duration: float):
        yield self.env.timeout(max(0.0, at - self.env.now))
        self.fabric.set_scale(ids, factor)
        if duration < INF:
            yield self.env.timeout(duration)
            self.fabric.set_scale(ids, 1.0 / factor)

    # --- checks the forecasts use ---------------------------------------------------------
    def _link_error(self, route: Iterable[int], start: float) -> LinkDownError | None:
        links = self.links
        for i in route:
            if links.down_at[i] <= start < links.up_at[i]:
                return self._link_down_error(i)  # type: ignore[attr-defined]
        return None

    def _link_scale(self, link: int, start: float) -> float:
        scale = 1.0
        for since, until, factor, ids in self._link_degraded:
            if since <= start < until and link in ids:
                scale *= factor
        return scale

    def _buffer_error(self, buffers: Iterable[int], end: float) -> MemoryFaultError | None:
        for b in buffers:
            found = self._buffers.get(b)
            if found is not None and found.fault_at < end:
                return MemoryFaultError(
                    f"uncorrectable ECC error in buffer {b} on device {found.device} "
                    f"(at t={found.fault_at * 1e6:.3f} us); its contents are lost: "
                    "free it and recompute"
                )
        return None


def _finite_end(dev: Device, now: float) -> float:
    """The forecast end of the device's work, or now when it is hung (never ends)."""
    end = dev.last_end()
    return end if end != INF else now
