"""Device buffers held by the client: a caching allocator over the daemon's alloc/free.

Like CUDA's caching allocator, freed buffers are kept per (device, size class) and reused, so a
training loop that allocates the same shapes every step makes no alloc round trips after the first
step. Reuse is safe because all launches of one client run in order on the daemon.
"""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from typing import Any

_SMALL = 1 << 20  # below 1 MiB: round up to 512 bytes
_SMALL_ROUND = 512
_LARGE_ROUND = 1 << 20  # at or above 1 MiB: round up to whole MiB


def size_class(nbytes: int) -> int:
    nbytes = max(int(nbytes), 1)
    step = _SMALL_ROUND if nbytes < _SMALL else _LARGE_ROUND
    return -(-nbytes // step) * step


class SimStorage:
    """One daemon buffer; every kpt_sim tensor viewing it holds a reference (views alias it)."""

    __slots__ = ("__weakref__", "buffer", "device", "nbytes")

    def __init__(self, device: int, buffer: int, nbytes: int) -> None:
        self.device, self.buffer, self.nbytes = device, buffer, nbytes


class CachingAllocator:
    """Hands out SimStorage objects; returns their buffers to a free list when they die."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._free: dict[tuple[int, int], list[int]] = defaultdict(list)
        self.allocated: dict[int, int] = defaultdict(int)  # device -> bytes in live tensors
        self.peak: dict[int, int] = defaultdict(int)
        self.reserved: dict[int, int] = defaultdict(int)  # device -> bytes held from the daemon
        self.closed = False

    def allocate(self, device: int, nbytes: int) -> SimStorage:
        size = size_class(nbytes)
        with self._lock:
            cached = self._free[(device, size)]
            buffer = cached.pop() if cached else None
        if buffer is None:
            buffer = self._alloc_or_flush(device, size)
            with self._lock:
                self.reserved[device] += size
        storage = SimStorage(device, buffer, size)
        with self._lock:
            self.allocated[device] += size
            self.peak[device] = max(self.peak[device], self.allocated[device])
        weakref.finalize(storage, self._release, device, buffer, size)
        return storage

    def _alloc_or_flush(self, device: int, size: int) -> int:
        try:
            return self._client.alloc(device, size)
        except MemoryError:
            # Cached buffers may be what fills the device: give them back once, then retry.
            if not self.empty_cache(device):
                raise
            return self._client.alloc(device, size)

    def _release(self, device: int, buffer: int, size: int) -> None:
        with self._lock:
            self.allocated[device] -= size
            if not self.closed:
                self._free[(device, size)].append(buffer)

    def empty_cache(self, device: int | None = None) -> int:
        """Return cached buffers to the daemon; the number of bytes given back."""
        with self._lock:
            victims = [
                (key, buffers) for key, buffers in self._free.items()
                if device is None or key[0] == device
            ]  # fmt: skip
            for key, _ in victims:
                self._free.pop(key)
        released = 0
        for (dev, size), buffers in victims:
            for buffer in buffers:
                try:
                    self._client.free(buffer)
                except Exception:  # the daemon is gone: nothing left to free
                    return released
                released += size
                with self._lock:
                    self.reserved[dev] -= size
        return released

    def reset_peak(self, device: int) -> None:
        with self._lock:
            self.peak[device] = self.allocated[device]
