"""Virtual time for a fleet of simulated workers: arrivals and service on one timeline.

A simulated chip's clock runs only while the chip works, at whatever pace the simulation
manages; a load generator that paces arrivals by the wall clock lands them at the wrong
moments of it. Here the fleet keeps one virtual timeline by conservative synchronisation, as a
parallel discrete-event simulator does:

- the router holds a horizon, the time before which no new request can arrive (the next
  arrival), and gives it to every worker with step_clock="virtual" (`FleetClock`);
- a worker steps its engines only while its chip's clock is before the horizon; an idle one
  moves its clock straight to it (the chip had nothing to do meanwhile); each says when it got
  there, with its load (`Horizon`);
- the driver (`run_virtual`, _virtual_bench.py) releases a request only once every worker has
  reached its arrival time, stamped with that time: the router places it on the loads the
  workers have at that moment, and each step's outputs carry the serving chip's clock, so TTFT,
  ITL, TPOT and E2E are virtual milliseconds measured by the real router, scheduler and engines.

A step in progress may carry a worker past the horizon (it ends when it ends): a request that
arrives meanwhile waits for it, as it would on the real chip.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from kpt.serve._clock import DeviceClock
from kpt.serve.fleet._messages import HORIZON
from kpt.serve.fleet._workers import WorkerState

_EPS_MS = 1e-6  # clocks are floats: a clock this close to the horizon has reached it


class Horizon:
    """A worker's side: how far its chip's clock may run, and when to say it got there."""

    def __init__(self, clock: DeviceClock) -> None:
        self.clock = clock
        self.until_ms = 0.0  # nothing happens before the fleet says so
        self._told_ms: float | None = None  # the horizon whose reaching was reported

    def extend(self, until_ms: float | None) -> None:
        """None: no more arrivals are coming; run freely."""
        self.until_ms = math.inf if until_ms is None else max(self.until_ms, float(until_ms))

    def open(self) -> bool:
        """True while the chip's clock is before the horizon: the engines may step."""
        return self.clock.now_ms() < self.until_ms - _EPS_MS

    def idle(self) -> None:
        """Nothing to do before the horizon: the chip's clock moves straight to it."""
        if math.isfinite(self.until_ms):
            behind_ms = self.until_ms - self.clock.now_ms()
            if behind_ms > 0:
                self.clock.charge_host(behind_ms / 1000.0)

    def reached(self) -> float | None:
        """The clock, once per horizon, when it is at or past it (to report); else None."""
        if self._told_ms == self.until_ms or not math.isfinite(self.until_ms):
            return None
        now = self.clock.now_ms()
        if now < self.until_ms - _EPS_MS:
            return None
        self._told_ms = self.until_ms
        return now

    def engine_arrival_ms(self, engine_clock: DeviceClock, arrival_ms: float) -> float:
        """A fleet arrival time on an engine's own clock (it started at another moment)."""
        waited_ms = max(0.0, self.clock.now_ms() - arrival_ms)
        return engine_clock.now_ms() - waited_ms


class FleetClock:
    """The router's side: the horizon it hands the virtual-time workers, how far each got."""

    def __init__(self, workers: Callable[[], list[WorkerState]]) -> None:
        self._workers = workers  # the router's live workers
        self._changed = threading.Condition()
        self._reached_ms: dict[str, float] = {}
        self.horizon_ms: float | None = 0.0  # None: no more arrivals

    def advance(self, until_ms: float | None) -> None:
        """No request arrives before `until_ms` (None: none arrives any more)."""
        with self._changed:
            self.horizon_ms = until_ms
        for worker in self._virtual():
            self.tell(worker)

    def tell(self, worker: WorkerState) -> None:
        """Give one worker the horizon (a worker that just registered, or all on advance)."""
        worker.client.cast(HORIZON, {"until_ms": self.horizon_ms})

    def note(self, worker_id: str, clock_ms: float) -> None:
        """A worker's clock reached the horizon it was given."""
        with self._changed:
            self._reached_ms[worker_id] = max(clock_ms, self._reached_ms.get(worker_id, 0.0))
            self._changed.notify_all()

    def reached_ms(self) -> dict[str, float]:
        with self._changed:
            return dict(self._reached_ms)

    def wait_until(self, at_ms: float, timeout_s: float) -> None:
        """Block until every ready virtual-time worker's clock is at `at_ms` or later."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                workers = self._virtual()
                if any(w.step_clock != "virtual" for w in self._workers()):
                    raise RuntimeError(
                        "a virtual-time run needs every worker on step_clock='virtual'; "
                        + ", ".join(f"{w.worker_id}: {w.step_clock}" for w in self._workers())
                    )
                behind = [
                    w.worker_id
                    for w in workers
                    if self._reached_ms.get(w.worker_id, -1.0) < at_ms - _EPS_MS
                ]
                if workers and not behind:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"virtual time: after {timeout_s:.0f} s of wall time, workers "
                        f"{behind or 'none registered'} had not reached {at_ms:.3f} ms"
                    )
                self._changed.wait(min(left, 1.0))  # 1 s: also notices workers that left

    def _virtual(self) -> list[WorkerState]:
        return [w for w in self._workers() if w.step_clock == "virtual" and w.state == "ready"]
