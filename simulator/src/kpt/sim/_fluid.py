"""Bandwidth shared by concurrent transfers: links, host links and HBM as fluid channels.

A channel moves `capacity` units (bytes) per second. Each flow crosses one or more channels
and moves at the smallest fair share among them (capacity x scale / flows on it), so two
copies over one link each get half of it and finish together, and a kernel's memory traffic
slows a DMA copy on the same HBM. Rates change only when a flow starts, ends or a channel's
capacity changes (a degraded link); then every flow's progress is settled and one simpy
timeout is set for the next flow to finish. simpy's own resources work the same way: state
plus events, no process per flow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import simpy

# A flow whose remaining work is below this fraction of its size has finished (float dust).
DONE_FRACTION = 1e-9
CLOCK_RESOLUTION = 1e-12  # relative: float seconds resolve ~1e-16 of the time; keep margin
MIN_STEP_S = 1e-15


class Flow:
    __slots__ = ("amount", "channels", "done", "rate", "remaining")

    def __init__(self, amount: float, channels: tuple[int, ...], done: simpy.Event) -> None:
        self.amount = amount
        self.remaining = amount
        self.channels = channels
        self.done = done
        self.rate = 0.0


class Fabric:
    """Every shared channel of a cluster; `flow()` returns a Flow whose `done` event fires
    when its amount has moved."""

    def __init__(self, env: simpy.Environment, capacities: Sequence[float]) -> None:
        self.env = env
        self.capacity = [float(c) for c in capacities]
        self.scale = [1.0] * len(self.capacity)
        self.count = [0] * len(self.capacity)  # flows (and held shares) on each channel
        self.flows: list[Flow] = []
        self._settled_at = env.now
        self._generation = 0  # a timer set before the last change is stale

    def add_channel(self, capacity: float) -> int:
        self.capacity.append(float(capacity))
        self.scale.append(1.0)
        self.count.append(0)
        return len(self.capacity) - 1

    def idle(self, channels: Sequence[int]) -> bool:
        count = self.count
        return not any(count[c] for c in channels)

    def flow(self, amount: float, channels: Sequence[int]) -> Flow:
        done = self.env.event()
        flow = Flow(float(amount), tuple(channels), done)
        if amount <= 0 or not channels:
            done.succeed()
            return flow
        self._settle()
        self.flows.append(flow)
        for c in flow.channels:
            self.count[c] += 1
        self._reschedule()
        return flow

    def cancel(self, flow: Flow) -> None:
        """Stop a flow (its work was interrupted by a fault); its done event never fires."""
        if flow in self.flows:
            self._settle()
            self._remove(flow)
            self._reschedule()

    def hold(self, channels: Sequence[int], delta: int) -> None:
        """Count (+1) or uncount (-1) a share on channels that work outside the fluid model
        uses (a collective run in closed form): other flows see the channel shared."""
        self._settle()
        for c in channels:
            self.count[c] += delta
        self._reschedule()

    def set_scale(self, channels: Sequence[int], factor: float) -> None:
        self._settle()
        for c in channels:
            self.scale[c] *= factor
        self._reschedule()

    # --- internals ------------------------------------------------------------------------
    def _remove(self, flow: Flow) -> None:
        self.flows.remove(flow)
        for c in flow.channels:
            self.count[c] -= 1

    def _settle(self) -> None:
        """Move every flow forward at its rate to now."""
        elapsed = self.env.now - self._settled_at
        if elapsed > 0:
            for flow in self.flows:
                flow.remaining -= flow.rate * elapsed
        self._settled_at = self.env.now

    def _reschedule(self) -> None:
        self._generation += 1
        if not self.flows:
            return
        capacity, scale, count = self.capacity, self.scale, self.count
        soonest = math.inf
        for flow in self.flows:
            flow.rate = min(capacity[c] * scale[c] / count[c] for c in flow.channels)
            if flow.rate > 0:
                soonest = min(soonest, max(flow.remaining, 0.0) / flow.rate)
        if soonest < math.inf:
            timer = self.env.timeout(soonest, self._generation)
            timer.callbacks.append(self._on_timer)

    def _on_timer(self, timer: simpy.Event) -> None:
        if timer.value != self._generation:
            return  # rates changed since this timer was set
        self._settle()
        # Done: its remaining work is float dust, or would take less time than the clock
        # can still resolve at this time (a timer that short would not move it).
        resolution = max(MIN_STEP_S, self.env.now * CLOCK_RESOLUTION)
        finished = [f for f in self.flows if f.remaining <= f.amount * DONE_FRACTION
                    or f.remaining <= f.rate * resolution]  # fmt: skip
        for flow in finished:
            self._remove(flow)
            flow.done.succeed()
        self._reschedule()
