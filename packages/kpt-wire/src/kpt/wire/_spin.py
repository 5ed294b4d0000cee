"""Spin-then-block waiting for unix:// peers, backing off when spinning does not pay.

Why: a thread that blocks lets its CPU go idle, and on virtual machines waking an idle vCPU
costs tens of microseconds and leaves caches cold (the code that runs next is ~3x slower). A
short spin keeps both ends of a same-host round trip awake: an empty kpt_sim synchronize went
from ~97 to ~26 us and a small op plus synchronize from ~233 to ~83 us on a 2-vCPU VM. CUDA
makes the same trade (cudaDeviceScheduleAuto spins while cores are spare).

Spinning must never cost more than it saves, so a Spinner stops when it does not pay: a
machine with one CPU never spins; a spin that is preempted (a long gap between two polls means
other work wants this CPU) or that runs out before the message comes turns spinning off for the
next waits, twice as many each time it fails again (up to 64), and one caught message turns it
back on. ``KPT_WIRE_SPIN_US`` sets the window (default 200 us; 0: never spin).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

_ENV = "KPT_WIRE_SPIN_US"
_DEFAULT_US = 200.0
_PREEMPTED_S = 50e-6  # a gap this long between two polls: the thread was descheduled
_MAX_BACKOFF = 64  # waits without spinning after repeated failures, at most


def spin_window_s() -> float:
    """The configured spin window in seconds (0 on a one-CPU machine or when turned off)."""
    if (os.cpu_count() or 1) < 2:
        return 0.0
    raw = os.environ.get(_ENV, "").strip()
    try:
        micros = float(raw) if raw else _DEFAULT_US
    except ValueError:
        raise ValueError(
            f"{_ENV}={raw!r}: give microseconds as a number (0 turns spinning off)"
        ) from None
    return max(0.0, micros) * 1e-6


class Spinner:
    """Decides whether to spin before a wait, and learns from how the spin went."""

    __slots__ = ("_backoff", "_skip", "window_s")

    def __init__(self, window_s: float | None = None):
        self.window_s = spin_window_s() if window_s is None else window_s
        self._skip = 0  # waits left to take without spinning
        self._backoff = 1

    def spin(self, ready: Callable[[], bool]) -> bool:
        """Poll ``ready()`` for up to the window; True if it became ready meanwhile."""
        if self.window_s <= 0:
            return False
        if self._skip:
            self._skip -= 1
            return False
        now = time.perf_counter()
        until = now + self.window_s
        while True:
            if ready():
                self._backoff = 1
                return True
            last, now = now, time.perf_counter()
            if now >= until or now - last > _PREEMPTED_S:
                self._skip = self._backoff
                self._backoff = min(2 * self._backoff, _MAX_BACKOFF)
                return False
