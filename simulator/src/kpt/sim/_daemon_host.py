"""The daemon's own host memory: what backing buffers with values may cost, in total and per
client, so that one client cannot make the daemon (and every other client with it) run out."""

from __future__ import annotations

import os
from collections import defaultdict

from kpt.sim._errors import OutOfMemoryError

DEFAULT_SHARE = 0.75  # of the memory available when the daemon starts


def available_host_memory() -> int:
    """MemAvailable from /proc/meminfo, else physical memory, in bytes."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class HostMemory:
    """Counts bytes of values held per client; refuses what would pass a limit."""

    def __init__(self, total: int | None = None, per_client: int | None = None) -> None:
        self.total = int(total if total is not None else available_host_memory() * DEFAULT_SHARE)
        self.per_client = int(per_client) if per_client is not None else self.total
        if self.total < 1 or self.per_client < 1:
            raise ValueError("host memory limits must be positive byte counts")
        self.used = 0
        self._by_client: dict[bytes, int] = defaultdict(int)

    def reserve(self, client: bytes, nbytes: int, device: int) -> None:
        mine = self._by_client[client]
        if self.used + nbytes > self.total or mine + nbytes > self.per_client:
            limit, held = (
                (self.per_client, mine) if mine + nbytes > self.per_client else
                (self.total, self.used)
            )  # fmt: skip
            raise OutOfMemoryError(
                f"device {device}: the simulator daemon's host cannot back {nbytes} more bytes "
                f"with values ({held} of its {limit}-byte limit in use); free buffers, start "
                "the daemon with a larger --host-memory-gib, or use --numerics off",
                device=device, requested=nbytes, free=max(limit - held, 0), total=limit,
            )  # fmt: skip
        self._by_client[client] = mine + nbytes
        self.used += nbytes

    def release(self, client: bytes, nbytes: int) -> None:
        left = self._by_client[client] - nbytes
        if left > 0:
            self._by_client[client] = left
        else:
            self._by_client.pop(client, None)
        self.used -= nbytes

    def held(self, client: bytes) -> int:
        return self._by_client.get(client, 0)

    def clear(self) -> None:
        self._by_client.clear()
        self.used = 0
