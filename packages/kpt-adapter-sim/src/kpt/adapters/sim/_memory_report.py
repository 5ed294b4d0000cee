"""torch.kpt_sim.memory_stats / memory_summary / memory_snapshot, shaped like torch.cuda's.

This process's numbers come from its caching allocator (what its tensors hold, what it keeps
cached); the device-wide numbers (every process on the daemon) come from the daemon.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from kpt.adapters.sim._storage import CachingAllocator


def memory_stats(allocator: CachingAllocator, device: int, daemon: dict) -> dict[str, Any]:
    """torch.cuda.memory_stats' keys that apply (".all" pools only), plus the daemon's view."""
    counts = allocator.counts[device]
    allocated, reserved = allocator.allocated[device], allocator.reserved[device]
    stats: dict[str, Any] = {
        "allocated_bytes.all.current": allocated,
        "allocated_bytes.all.peak": allocator.peak[device],
        "active_bytes.all.current": allocated,
        "active_bytes.all.peak": allocator.peak[device],
        "reserved_bytes.all.current": reserved,
        "reserved_bytes.all.peak": max(allocator.reserved_peak[device], reserved),
        "inactive_split_bytes.all.current": reserved - allocated,
        "allocation.all.allocated": counts["allocations"],
        "num_alloc_retries": counts["num_alloc_retries"],
        "num_ooms": counts["num_ooms"],
        "device_free_bytes": int(daemon.get("free", 0)),
        "device_total_bytes": int(daemon.get("total", 0)),
        "device_allocated_bytes": int(daemon.get("allocated", 0)),
    }
    return OrderedDict(sorted(stats.items()))


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(nbytes) < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} TiB"  # pragma: no cover


def memory_summary(device: int, name: str, stats: dict[str, Any]) -> str:
    """A table like torch.cuda.memory_summary()'s, for one kpt_sim device."""
    allocated, reserved = "allocated_bytes.all.", "reserved_bytes.all."
    rows = [
        ("Allocated memory", stats[allocated + "current"], stats[allocated + "peak"]),
        ("Reserved memory", stats[reserved + "current"], stats[reserved + "peak"]),
        ("Cached (not allocated)", stats["inactive_split_bytes.all.current"], None),
        ("Device free (all processes)", stats["device_free_bytes"], None),
        ("Device total", stats["device_total_bytes"], None),
    ]
    width = 75
    lines = ["=" * width, f" kpt_sim:{device} ({name}) memory summary".ljust(width), "-" * width,
             f" {'Metric':<32}| {'Current':>18} | {'Peak':>18}", "-" * width]  # fmt: skip
    for label, current, peak in rows:
        lines.append(
            f" {label:<32}| {_size(current):>18} | {_size(peak) if peak is not None else '':>18}"
        )
    lines += ["-" * width,
              f" Allocations: {stats['allocation.all.allocated']}   cache flushes to retry: "
              f"{stats['num_alloc_retries']}   out-of-memory errors: {stats['num_ooms']}",
              "=" * width]  # fmt: skip
    return "\n".join(lines) + "\n"


def memory_snapshot(allocator: CachingAllocator, device: int) -> list[dict[str, Any]]:
    """Segments shaped like torch.cuda.memory_snapshot()'s: the live tensors' buffers as one
    active segment (the allocator counts them, it does not list them), then one inactive
    segment per buffer cached for reuse."""
    cached = allocator.cached(device)
    live = allocator.allocated[device]
    segments: list[dict[str, Any]] = []
    if live:
        segments.append(_segment(device, live, "active_allocated"))
    segments += [_segment(device, size, "inactive") for size in cached]
    return segments


def _segment(device: int, size: int, state: str) -> dict[str, Any]:
    return {
        "device": device,
        "address": 0,
        "total_size": size,
        "allocated_size": size if state == "active_allocated" else 0,
        "active_size": size if state == "active_allocated" else 0,
        "segment_type": "large" if size >= 1 << 20 else "small",
        "blocks": [{"size": size, "state": state}],
    }
