"""Memory set aside per client and device, so an allocation without a round trip cannot fail.

``alloc_async`` answers nothing: if it ran out of memory, the error could only surface at a
later call. On a daemon that many processes share, free memory changes under a client's feet,
so the client first leases a slice of the device synchronously (an out-of-memory error is then
raised at the allocation that needed it) and carves its asynchronous allocations out of the
lease. A lease is held in the engine as one placeholder buffer, so every other client sees the
memory as taken (as CUDA shows another process's reserved memory).
"""

from __future__ import annotations

from kpt.sim._errors import OutOfMemoryError
from kpt.sim._memory import ALIGNMENT
from kpt.sim._simulator import Simulator


def aligned(nbytes: int) -> int:
    """What an allocation of nbytes takes from a device (the engine's rounding)."""
    return -(-max(nbytes, 1) // ALIGNMENT) * ALIGNMENT


class Leases:
    """Per (client, device): one engine placeholder buffer and its size."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._held: dict[tuple[bytes, int], tuple[int, int]] = {}

    def grant(self, client: bytes, device: int, want: int, need: int) -> int:
        """Replace the client's lease on `device` with `want` bytes if they fit, else `need`;
        OutOfMemoryError (naming the sizes) if not even `need` fits. Returns the bytes granted."""
        self.release(client, device)
        want, need = aligned(max(want, need)), aligned(need)
        for size in (want, need) if want > need else (need,):
            try:
                self._held[client, device] = (self._sim.alloc(device, size), size)
                return size
            except OutOfMemoryError as exc:
                error = exc
        raise error

    def take(self, client: bytes, device: int, nbytes: int) -> bool:
        """Shrink the lease by what an allocation of nbytes takes; False if it does not cover
        it. On True the memory is free in the engine for the caller to allocate at once."""
        held = self._held.get((client, device))
        size = aligned(nbytes)
        if held is None or held[1] < size:
            return False
        buffer, leased = self._held.pop((client, device))
        self._sim.free(buffer)
        if leased > size:  # the rest stays leased; it fits, since it was just freed
            self._held[client, device] = (self._sim.alloc(device, leased - size), leased - size)
        return True

    def release(self, client: bytes, device: int | None = None) -> None:
        """Give the client's lease(s) back to the device(s)."""
        for key in [k for k in self._held if k[0] == client and device in (None, k[1])]:
            buffer, _ = self._held.pop(key)
            self._sim.free(buffer)

    def clear(self) -> None:
        self._held.clear()  # the engine's reset drops its buffers itself

    def on_device(self, device: int) -> int:
        return sum(size for (_, d), (_, size) in self._held.items() if d == device)

    def held(self, client: bytes, device: int) -> int:
        found = self._held.get((client, device))
        return 0 if found is None else found[1]
