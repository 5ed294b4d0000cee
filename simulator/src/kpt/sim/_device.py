"""One simulated chip: in-order streams, a compute engine, DMA engines, HBM, host link, faults.

Every engine is a reservation timeline (the time it is next free). Work issued to a stream
starts when the stream, the engines it needs and the host are all ready, so a device whose
resources are uncontended advances arithmetically, with no event queue on the per-op path.
"""

from __future__ import annotations

import math

from kpt.sim._errors import DeviceLostError, SimError
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
        self.streams: dict[int, float] = {}  # stream id -> when its last work ends
        self.compute_free = 0.0  # kernels from all streams share the compute engine
        self.hbm_free = 0.0  # HBM bandwidth shared by kernels and DMA copies
        self.dma_free = [0.0] * self.profile.dma_engines
        self.h2d_free = 0.0  # host link, one timeline per direction
        self.d2h_free = 0.0
        self.host_free = 0.0  # when the host has issued everything so far to this device
        self.ops = 0  # ops issued, for faults scheduled "after N ops"
        self.busy = 0.0  # seconds of compute-engine work, for utilization
        self.lost_at = INF
        self.hang_at = INF
        self.slowdowns: list[tuple[float, float, float]] = []  # (from, until, x duration)
        self.op_triggers: list = []  # (after_ops, Fault), sorted
        self.next_trigger = INF
        self.pending: list[SimError] = []  # async errors, raised by synchronize()
        self.faulty = False  # any fault state set: take the slow path

    # --- faults on the per-op path --------------------------------------------------------
    def adjust(self, start: float, duration: float) -> tuple[float, SimError | None]:
        """End time of work starting at `start` under this device's faults, and its error."""
        for since, until, factor in self.slowdowns:
            if since <= start < until:
                duration *= factor
        end = start + duration
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
        return max(self.streams.values(), default=0.0)
