"""Device buffers held by the client: a caching allocator over the daemon's alloc/free.

Like CUDA's caching allocator, freed buffers are kept per (device, size class) and reused, so a
training loop that allocates the same shapes every step makes no alloc round trips after the first
step. Reuse is safe because all launches of one client run in order on the daemon.

A cache miss costs no round trip either while the device is far from full: the buffer is made
with ``alloc_async`` (a client-chosen id, queued with the launches). Near the device's capacity
allocation is synchronous, so an out-of-memory error is raised at the call that caused it.

``tensor.untyped_storage()`` of a kpt_sim tensor is a ``SimUntypedStorage``: its size is the
daemon buffer's, and ``resize_(0)`` / ``resize_(n)`` give the buffer back and take a new one for
every view at once, which is how FSDP2 frees unsharded parameters between uses.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import torch

from kpt.sim import TensorRef

_SMALL = 1 << 20  # below 1 MiB: round up to 512 bytes
_SMALL_ROUND = 512
_LARGE_ROUND = 1 << 20  # at or above 1 MiB: round up to whole MiB
FREED = None  # the buffer of a storage resized to zero bytes (daemon ids may be negative)
# data_ptr() of a live storage: a made-up address, distinct per (device, buffer), never 0
_ADDRESS_DEVICE_SHIFT = 48
_ADDRESS_BUFFER_BITS = 32
_ADDRESS_BUFFER_SHIFT = 12
# Below this share of a device's memory (held by this client) misses use alloc_async; above
# it, a synchronous alloc, so OOM surfaces at once and cached buffers can be given back first.
ASYNC_ALLOC_SHARE = 0.5


def size_class(nbytes: int) -> int:
    nbytes = max(int(nbytes), 1)
    step = _SMALL_ROUND if nbytes < _SMALL else _LARGE_ROUND
    return -(-nbytes // step) * step


class SimStorage:
    """One daemon buffer; every kpt_sim tensor viewing it holds a reference (views alias it).

    When the last reference goes, the buffer returns to its allocator's free list (``__del__`` is
    cheaper than a weakref.finalize per tensor on the hot path).
    """

    __slots__ = ("__weakref__", "_allocator", "buffer", "device", "nbytes")

    def __init__(self, device: int, buffer: int, nbytes: int, allocator: Any = None) -> None:
        self.device, self.buffer, self.nbytes = device, buffer, nbytes
        self._allocator = allocator

    def __del__(self) -> None:
        allocator = self._allocator
        if allocator is not None and self.buffer is not FREED:
            try:
                allocator.release(self.device, self.buffer, self.nbytes)
            except Exception:  # interpreter shutdown: nothing left to give back to
                pass

    @staticmethod
    def untyped_storage_of(tensor: Any) -> SimUntypedStorage:
        """``Tensor.untyped_storage`` for SimTensor (assigned in its class body)."""
        return SimUntypedStorage.of(tensor._sim)

    def resize(self, nbytes: int) -> None:
        """Hold at least ``nbytes`` (0: give the buffer back). Every view of this storage sees
        the new buffer; growing keeps the old bytes, as torch's resize_ does."""
        nbytes = int(nbytes)
        if nbytes < 0:
            raise RuntimeError(f"kpt_sim: resize_({nbytes}): the size must be >= 0 bytes")
        allocator = self._allocator
        if allocator is None:
            raise RuntimeError(
                "kpt_sim: this storage has no allocator (a borrowed buffer) and cannot be resized"
            )
        if nbytes == 0:
            if self.buffer is not FREED:
                allocator.release(self.device, self.buffer, self.nbytes)
                self.buffer, self.nbytes = FREED, 0
            return
        if self.buffer is not FREED and nbytes <= self.nbytes:
            return  # the buffer already holds it (sizes are rounded up to a class)
        grown = allocator.allocate(self.device, nbytes)
        if self.buffer is not FREED:
            allocator.copy_bytes(self.buffer, grown.buffer, self.nbytes)
            allocator.release(self.device, self.buffer, self.nbytes)
        # Take the new buffer over: `grown` must not give it back when it dies.
        self.buffer, self.nbytes = grown.buffer, grown.nbytes
        grown.buffer, grown.nbytes = FREED, 0


class SimUntypedStorage(torch.UntypedStorage):
    """What ``untyped_storage()`` of a kpt_sim tensor returns: the size of its daemon buffer and
    ``resize_``. The bytes stay in the daemon: torch's own storage functions (data access,
    copy_, set_) see an empty host storage, so they refuse rather than read wrong bytes."""

    _sim: SimStorage

    @classmethod
    def of(cls, storage: SimStorage) -> SimUntypedStorage:
        made = cls(0)
        made._sim = storage
        return made

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("kpt_sim", self._sim.device)

    def nbytes(self) -> int:  # type: ignore[override]
        return self._sim.nbytes

    def size(self) -> int:  # type: ignore[override]
        return self._sim.nbytes

    def __len__(self) -> int:
        return self._sim.nbytes

    def data_ptr(self) -> int:  # type: ignore[override]
        """0 once freed, else an address that names this buffer (compare, never dereference)."""
        storage = self._sim
        if storage.buffer is FREED:
            return 0
        buffer = storage.buffer % (1 << _ADDRESS_BUFFER_BITS)  # alias ids are negative
        return (storage.device + 1) << _ADDRESS_DEVICE_SHIFT | buffer << _ADDRESS_BUFFER_SHIFT

    def resize_(self, size: int) -> SimUntypedStorage:  # type: ignore[override]
        self._sim.resize(size)
        return self

    def __repr__(self) -> str:
        return f"SimUntypedStorage({self._sim.nbytes} bytes on {self.device})"


class CachingAllocator:
    """Hands out SimStorage objects; returns their buffers to a free list when they die."""

    def __init__(self, client: Any, capacity: dict[int, int] | None = None) -> None:
        self._client = client
        # Re-entrant: a storage dying during a GC pass inside allocate() releases on this thread.
        self._lock = threading.RLock()
        self._free: dict[tuple[int, int], list[int]] = defaultdict(list)
        self.allocated: dict[int, int] = defaultdict(int)  # device -> bytes in live tensors
        self.peak: dict[int, int] = defaultdict(int)
        self.reserved: dict[int, int] = defaultdict(int)  # device -> bytes held from the daemon
        self.reserved_peak: dict[int, int] = defaultdict(int)
        # device -> event counts, CUDA's names: allocations, cache flushes to retry, refusals
        self.counts: dict[int, dict[str, int]] = defaultdict(
            lambda: {"allocations": 0, "num_alloc_retries": 0, "num_ooms": 0}
        )
        # device -> bytes this client may reserve with alloc_async (0: always synchronous)
        self._async_limit = {
            device: int(total * ASYNC_ALLOC_SHARE) for device, total in (capacity or {}).items()
        }
        self.closed = False
        # device -> the graph pool a capture on it allocates from (see _graphs.GraphPool)
        self.capturing: dict[int, Any] = {}

    def allocate(self, device: int, nbytes: int) -> SimStorage:
        """A buffer of at least nbytes on ``device`` (this process's index). A refusal raises the
        daemon's OutOfMemoryError here, at the allocation, with ``device`` set to ``device``."""
        try:
            pool = self.capturing.get(device) if self.capturing else None
            storage = self._allocate(device, nbytes, pool)
        except MemoryError as error:
            with self._lock:
                self.counts[device]["num_ooms"] += 1
            if hasattr(error, "device"):  # the daemon numbers devices its own way
                error.device = device
            raise
        with self._lock:
            self.counts[device]["allocations"] += 1
            if self.reserved[device] > self.reserved_peak[device]:
                self.reserved_peak[device] = self.reserved[device]
        return storage

    def _allocate(self, device: int, nbytes: int, pool: Any = None) -> SimStorage:
        size = size_class(nbytes)
        with self._lock:
            cached = (self._free if pool is None else pool.free).get((device, size))
            buffer = cached.pop() if cached else None
            if buffer is None and self.reserved[device] + size <= self._async_limit.get(device, 0):
                try:
                    buffer = self._client.alloc_async(device, size)
                    self.reserved[device] += size
                except MemoryError:  # its lease could not grow: flush the cache and retry below
                    buffer = None
            allocated = self.allocated[device] = self.allocated[device] + size
            if allocated > self.peak[device]:
                self.peak[device] = allocated
        if buffer is None:
            try:
                buffer = self._alloc_or_flush(device, size)
            except BaseException:
                with self._lock:
                    self.allocated[device] -= size
                raise
            with self._lock:
                self.reserved[device] += size
        return SimStorage(device, buffer, size, self if pool is None else pool)

    def _alloc_or_flush(self, device: int, size: int) -> int:
        try:
            return self._client.alloc(device, size)
        except MemoryError:
            # Cached buffers may be what fills the device: give them back once, then retry.
            if not self.empty_cache(device):
                raise
            with self._lock:
                self.counts[device]["num_alloc_retries"] += 1
            return self._client.alloc(device, size)

    def copy_bytes(self, source: int, target: int, nbytes: int) -> None:
        """Queue a copy of the first ``nbytes`` of buffer ``source`` into buffer ``target``."""
        shape, stride = (nbytes,), (1,)
        self._client.copy(TensorRef(source, 0, "uint8", shape, stride),
                          TensorRef(target, 0, "uint8", shape, stride))  # fmt: skip

    def release(self, device: int, buffer: int, size: int, free: Any = None) -> None:
        """A dead storage's buffer goes back to `free` (a graph pool's list; default: the
        cache), to be handed out again."""
        with self._lock:
            self.allocated[device] -= size
            if not self.closed:
                (self._free if free is None else free)[(device, size)].append(buffer)

    def adopt(self, free: dict[tuple[int, int], list[int]]) -> None:
        """Take a closed graph pool's free buffers into the cache."""
        with self._lock:
            for key, buffers in free.items():
                self._free[key].extend(buffers)
            free.clear()

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

    def cached(self, device: int) -> list[int]:
        """Sizes of the buffers held in the cache for ``device`` (reserved, not allocated)."""
        with self._lock:
            return [size for (d, size), buffers in self._free.items() if d == device
                    for _ in buffers]  # fmt: skip

    def reset_peak(self, device: int) -> None:
        with self._lock:
            self.peak[device] = self.allocated[device]
            self.reserved_peak[device] = self.reserved[device]
