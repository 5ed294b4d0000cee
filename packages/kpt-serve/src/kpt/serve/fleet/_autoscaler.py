"""Autoscaling: add a worker when requests queue up (or TTFT misses its target), remove an
idle one, within [min_workers, max_workers] and never twice within the cool-down."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("kpt.serve.fleet.autoscaler")


@dataclass(frozen=True)
class ScalingPolicy:
    min_workers: int = 1
    max_workers: int = 4
    target_queue: float = 4.0  # waiting requests per worker above which one is added
    target_ttft_ms: float | None = None  # recent TTFT p90 above this also adds one
    idle_s: float = 30.0  # a fleet with nothing in flight this long loses a worker
    cooldown_s: float = 10.0  # no two scaling events closer than this

    def __post_init__(self) -> None:
        if not 0 <= self.min_workers <= self.max_workers or self.max_workers < 1:
            raise ValueError(
                f"need 0 <= min_workers ({self.min_workers}) <= max_workers ({self.max_workers}) "
                "and max_workers >= 1"
            )
        if self.target_queue <= 0 or self.cooldown_s < 0 or self.idle_s <= 0:
            raise ValueError(
                f"target_queue ({self.target_queue}) and idle_s ({self.idle_s}) must be > 0, "
                f"cooldown_s ({self.cooldown_s}) >= 0"
            )


@dataclass(frozen=True)
class FleetLoad:
    """What the policy looks at, as the router sees it now."""

    workers: int  # live and starting workers of the model
    queued: int  # requests waiting (at the router and inside workers)
    inflight: int  # requests running or waiting anywhere
    ttft_p90_ms: float | None  # over the recent window, None without data
    starting: int = 0  # of `workers`, those still loading (not registered with the router)


def decide(policy: ScalingPolicy, load: FleetLoad, idle_for_s: float, since_last_s: float) -> int:
    """+1 to add a worker, -1 to remove one, 0 to hold."""
    if load.workers < policy.min_workers:
        return 1
    if load.workers > policy.max_workers:
        return -1
    if since_last_s < policy.cooldown_s:
        return 0
    slow = (
        policy.target_ttft_ms is not None
        and load.ttft_p90_ms is not None
        and load.ttft_p90_ms > policy.target_ttft_ms
    )
    crowded = load.queued > policy.target_queue * max(load.workers, 1)
    if (crowded or slow) and load.workers < policy.max_workers:
        return 1
    if (
        load.inflight == 0
        and load.starting == 0  # a fleet still bringing a worker up is not idle, it is early
        and idle_for_s >= policy.idle_s
        and load.workers > policy.min_workers
    ):
        return -1
    return 0


class Autoscaler:
    """Applies `decide` every `interval_s` through `scale(+1 | -1)` calls on its own thread."""

    def __init__(
        self,
        policy: ScalingPolicy,
        measure: Callable[[], FleetLoad],
        scale: Callable[[int], None],
        interval_s: float = 1.0,
    ) -> None:
        self.policy = policy
        self._measure = measure
        self._scale = scale
        self.interval_s = interval_s
        self.events: list[tuple[float, int, FleetLoad]] = []  # (time, +1/-1, load then)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kpt-serve-autoscaler", daemon=True)
        self._last_event = float("-inf")
        self._busy_at = time.monotonic()

    def start(self) -> Autoscaler:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def tick(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        load = self._measure()
        if load.inflight:
            self._busy_at = now
        change = decide(self.policy, load, now - self._busy_at, now - self._last_event)
        if change:
            log.info("autoscaler: %+d worker (%s)", change, load)
            self._scale(change)
            self._last_event = now
            self._busy_at = now  # a fresh worker gets a full idle window
            self.events.append((now, change, load))
        return change

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # keep scaling through a failed launch; say why
                log.exception("autoscaler tick failed")
