"""Connect the native library's PrivateUse1 hooks and device allocator to the Python runtime.

csrc/privateuse1_runtime.cpp registers what torch asks of a backend in C++ (pinned host memory,
a c10::DeviceAllocator for torch.accelerator.memory, device synchronize); kpt_sim's allocator and
daemon connection are Python, so the library calls back through the C function pointers made
here. A process that has not used kpt_sim yet answers without starting a daemon: nothing
allocated, nothing to synchronize.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

SYNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
STATS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                         ctypes.c_void_p, ctypes.c_int)  # fmt: skip
DEVICE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int)


def _report(error: BaseException, message: int, capacity: int) -> int:
    """Write what went wrong into the library's buffer (it raises a RuntimeError with it)."""
    text = f"{type(error).__name__}: {error}".encode(errors="replace")[: max(capacity - 1, 0)]
    ctypes.memmove(message, text, len(text))
    return 1


def _started_runtime() -> Any:
    from kpt.adapters.sim import _runtime

    return _runtime.runtime() if _runtime.is_started() else None


def synchronize(device: int, message: int, capacity: int) -> int:
    try:
        if _started_runtime() is not None:
            import torch

            torch.kpt_sim.synchronize(None if device < 0 else device)
        return 0
    except BaseException as error:  # a callback must not raise through C
        return _report(error, message, capacity)


def statistics(device: int, out: Any, message: int, capacity: int) -> int:
    try:
        rt = _started_runtime()
        if rt is None:
            return 0
        index = rt.check_device(None if device < 0 else device)
        allocator = rt.allocator
        counts = allocator.counts[index]
        values = (allocator.allocated[index], allocator.peak[index], allocator.reserved[index],
                  max(allocator.reserved_peak[index], allocator.reserved[index]),
                  counts["allocations"], counts["num_alloc_retries"], counts["num_ooms"],
                  allocator.allocated[index])  # fmt: skip
        for i, value in enumerate(values):
            out[i] = int(value)
        return 0
    except BaseException as error:
        return _report(error, message, capacity)


def empty_cache(device: int, message: int, capacity: int) -> int:
    try:
        rt = _started_runtime()
        if rt is not None:
            rt.allocator.empty_cache(None if device < 0 else device)
        return 0
    except BaseException as error:
        return _report(error, message, capacity)


def reset_peak(device: int, message: int, capacity: int) -> int:
    try:
        rt = _started_runtime()
        if rt is not None:
            rt.allocator.reset_peak(rt.check_device(None if device < 0 else device))
        return 0
    except BaseException as error:
        return _report(error, message, capacity)


@dataclass
class NativeRuntime:
    """The callbacks handed to the library; kept alive as long as the library may call them."""

    sync: Any
    stats: Any
    empty_cache: Any
    reset_peak: Any


class HooksUnavailable(RuntimeError):
    """torch already holds PrivateUse1 hooks, or registering ours failed (the message says)."""


def install(library: ctypes.CDLL) -> NativeRuntime:
    """Register the hooks and the device allocator in torch, wired to this process's runtime.

    torch accepts one PrivateUse1 hooks registration per process: call this instead of
    registering Python hooks, before anything else registers some."""
    callbacks = NativeRuntime(SYNC(synchronize), STATS(statistics), DEVICE(empty_cache),
                              DEVICE(reset_peak))  # fmt: skip
    library.kpt_runtime_set_callbacks.restype = None
    library.kpt_runtime_set_callbacks(callbacks.sync, callbacks.stats, callbacks.empty_cache,
                                      callbacks.reset_peak)  # fmt: skip
    library.kpt_runtime_install.restype = ctypes.c_int
    message = ctypes.create_string_buffer(2048)
    code = library.kpt_runtime_install(message, len(message))
    if code == 1:
        raise HooksUnavailable("PrivateUse1 hooks were already registered in this process")
    if code != 0:
        raise HooksUnavailable(f"registering kpt_sim's PrivateUse1 hooks failed: {message.value!r}")
    return callbacks
