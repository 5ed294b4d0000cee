"""The chip's runtime: the one file a vendor points at its own library.

This stand-in keeps "device memory" in host tensors and runs every kernel on the host, so the
whole adapter works, and passes the conformance kit, on any machine. Replace the bodies with
calls into your runtime (ctypes, pybind11, a daemon...): probe, memory, copies, kernels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

DEVICE_COUNT = 1
MEMORY_BYTES = 4 << 30  # what the chip has; allocations beyond it raise OutOfMemoryError


class Runtime:
    """One per process (see runtime()): device memory accounting, copies and kernels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.allocated = [0] * DEVICE_COUNT

    def missing(self) -> str | None:
        """Why the runtime cannot be used here (library or driver missing), or None."""
        return None

    def device_count(self) -> int:
        return DEVICE_COUNT

    def memory_total(self, index: int) -> int:
        return MEMORY_BYTES

    def allocate(self, index: int, nbytes: int) -> None:
        """Reserve device memory, before anything is allocated for it."""
        with self._lock:
            if self.allocated[index] + nbytes > MEMORY_BYTES:
                free = MEMORY_BYTES - self.allocated[index]
                raise torch.OutOfMemoryError(
                    f"NAME:{index} out of memory: tried to allocate {nbytes} bytes, "
                    f"{free} of {MEMORY_BYTES} free"
                )
            self.allocated[index] += nbytes

    def free(self, index: int, nbytes: int) -> None:
        with self._lock:
            self.allocated[index] -= nbytes

    def launch(self, kernel: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """Run one op (an aten overload) on host copies of its device arguments."""
        return kernel(*args, **kwargs)

    def synchronize(self, index: int) -> None:
        """Wait for queued work; this runtime runs every kernel at once."""


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime
