"""What ran on the CPU instead of the device, and what the client could not cost: counted.

One FallbackLedger per Runtime (``Runtime.fallbacks``): ``kpt.adapters.sim.fallback_report()``
and ``estimate_failure_report()`` read it, ``reset_fallback_report()`` clears it.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class FallbackLedger:
    """Counts per op with the latest reason; ``count`` says whether it is the op's first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fallbacks: Counter[str] = Counter()
        self._fallback_reasons: dict[str, str] = {}
        self._estimates: Counter[str] = Counter()
        self._estimate_reasons: dict[str, str] = {}

    def count_fallback(self, op: str, reason: str) -> bool:
        with self._lock:
            first = op not in self._fallbacks
            self._fallbacks[op] += 1
            self._fallback_reasons[op] = reason
        return first

    def count_estimate_failure(self, op: str, reason: str) -> bool:
        with self._lock:
            first = op not in self._estimates
            self._estimates[op] += 1
            self._estimate_reasons[op] = reason
        return first

    def fallbacks(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {op: {"count": n, "reason": self._fallback_reasons[op]}
                    for op, n in sorted(self._fallbacks.items())}  # fmt: skip

    def estimate_failures(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {op: {"count": n, "reason": self._estimate_reasons[op]}
                    for op, n in sorted(self._estimates.items())}  # fmt: skip

    def clear(self) -> None:
        with self._lock:
            self._fallbacks.clear()
            self._fallback_reasons.clear()
            self._estimates.clear()
            self._estimate_reasons.clear()
