"""Device memory: capacity accounting only. The engine never holds values, so an 80 GB
allocation costs no host memory; the daemon's executor owns any backing storage."""

from __future__ import annotations

from dataclasses import dataclass

from kpt.sim._errors import InvalidRequestError, OutOfMemoryError

# Allocations are rounded up like a caching allocator's smallest block.
ALIGNMENT = 512


@dataclass(slots=True)
class Buffer:
    id: int
    device: int
    nbytes: int  # what was asked for
    reserved: int  # what it takes from capacity (aligned)
    fault_at: float = float("inf")  # sim time of an uncorrectable ECC error in it


class MemoryPool:
    """Capacity of one device's HBM: allocated, peak, total, free (bytes)."""

    def __init__(self, device: int, total: int) -> None:
        self.device = device
        self.total = total
        self.allocated = 0
        self.peak = 0
        self.buffers: dict[int, Buffer] = {}

    def allocate(self, buffer_id: int, nbytes: int) -> Buffer:
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise InvalidRequestError(
                f"allocation size {nbytes!r} must be a non-negative integer number of bytes"
            )
        reserved = -(-max(nbytes, 1) // ALIGNMENT) * ALIGNMENT
        free = self.total - self.allocated
        if reserved > free:
            raise OutOfMemoryError.for_request(self.device, nbytes, free, self.total)
        self.allocated += reserved
        self.peak = max(self.peak, self.allocated)
        buffer = Buffer(buffer_id, self.device, nbytes, reserved)
        self.buffers[buffer_id] = buffer
        return buffer

    def release(self, buffer: Buffer) -> None:
        del self.buffers[buffer.id]
        self.allocated -= buffer.reserved

    def stats(self) -> dict[str, int]:
        return {
            "allocated": self.allocated,
            "peak": self.peak,
            "total": self.total,
            "free": self.total - self.allocated,
            "buffers": len(self.buffers),
        }

    def reset_peak(self) -> None:
        self.peak = self.allocated
