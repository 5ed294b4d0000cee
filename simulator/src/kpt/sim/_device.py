"""One simulated chip: its simpy resources, its streams' queues, its faults and its forecasts.

The simulation (kpt.sim._streams) runs each stream as a simpy process over the chip's
resources: its compute units (a Container of SMs that concurrent kernels share), its DMA
engines (a Resource), and its HBM and host-link channels in the cluster's Fabric. Beside that
the chip keeps a forecast per stream, the end of its issued work if nothing else contends,
which is what `Simulator.launch` returns at issue time (the host cannot wait for the truth
there: later work on other streams may still share the chip).
"""

from __future__ import annotations

import math
from collections import deque

import simpy

from kpt.sim._errors import DeviceLostError, SimError
from kpt.sim._host_model import HostIssue
from kpt.sim._memory import MemoryPool
from kpt.sim._profiles import Profile

INF = math.inf


class Device:
    def __init__(self, index: int, profile: Profile) -> None:
        self.index = index
        self.profile = profile
        self.memory = MemoryPool(index, profile.hbm_bytes)
        self.reset_time()

    def reset_time(self) -> None:
        # Forecasts and the host: arithmetic at issue time.
        self.streams: dict[int, float] = {}  # stream id -> forecast end of its issued work
        self.host_free = 0.0  # when the host has issued everything so far to this device
        # Host time per launch by source, when the profile has a [host] table (_host_model).
        host = self.profile.host
        self.host = HostIssue(host, self.profile.rnn.persistent) if host is not None else None
        self.ops = 0  # ops issued, for faults scheduled "after N ops"
        # Faults.
        self.lost_at = INF
        self.hang_at = INF
        self.slowdowns: list[tuple[float, float, float]] = []  # (from, until, x duration)
        self.op_triggers: list = []  # (after_ops, Fault), sorted
        self.next_trigger = INF
        self.pending: list[SimError] = []  # async errors, raised by synchronize()
        self.faulty = False  # any fault state set: take the slow paths
        # The simulation's truth, kept by the stream processes.
        self.ended: dict[int, float] = {}  # stream id -> when its last finished work ended
        self.busy = 0.0  # seconds of kernel work, for utilization
        self.busy_by_class: dict[str, float] = {}  # for prediction intervals
        self.queued = 0  # ops issued and not finished, over all streams

    def attach(self, env: simpy.Environment, hbm: int, h2d: int, d2h: int) -> None:
        """The chip's simpy resources in a fresh environment, and its Fabric channels."""
        p = self.profile
        self.sms = simpy.Container(env, capacity=p.compute_units, init=p.compute_units)
        self.dma = simpy.Resource(env, capacity=p.dma_engines)
        self.hbm_channel, self.h2d_channel, self.d2h_channel = hbm, h2d, d2h
        self.queues: dict[int, deque] = {}
        self.wakeups: dict[int, simpy.Event | None] = {}
        self.processes: dict[int, simpy.Process] = {}
        self.running: dict[int, object] = {}  # stream -> the op in flight (faults interrupt it)
        self.space: simpy.Event | None = None  # the host waits on it when the queue is full
        self.idle: simpy.Event | None = None  # the host waits on it to synchronize
        self.batch_ends: deque[float] = deque()  # ends of a batch in flight, slots not taken

    # --- faults ---------------------------------------------------------------------------
    def slowdown(self, start: float) -> float:
        factor = 1.0
        for since, until, f in self.slowdowns:
            if since <= start < until:
                factor *= f
        return factor

    def adjust(self, start: float, duration: float) -> tuple[float, SimError | None]:
        """Forecast end of work starting at `start` under this device's faults, and its error."""
        end = start + duration * self.slowdown(start)
        if start >= self.lost_at or end > self.lost_at:
            return max(start, self.lost_at), self.lost_error()
        if end > self.hang_at:
            return INF, None  # a hung device never finishes; synchronize() times out on it
        return end, None

    def lost_error(self) -> DeviceLostError:
        return DeviceLostError(
            f"device {self.index} was lost at t={self.lost_at * 1e6:.3f} us; its work and "
            "buffers are gone: reset the simulator or use another device"
        )

    def fail(self, error: SimError) -> None:
        if not self.pending:
            self.pending.append(error)

    def last_end(self) -> float:
        """Forecast end of all issued work (INF: a hang)."""
        return max(self.streams.values(), default=0.0)

    def finished_at(self) -> float:
        """When the last work the simulation has run on this chip ended."""
        return max(self.ended.values(), default=0.0)
