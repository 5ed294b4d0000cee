"""Bounds a receiver enforces before it decodes or allocates anything."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Per-message bounds; a message over any of them is refused with ProtocolError."""

    max_frames: int = 64
    max_header_bytes: int = 1 << 20
    max_message_bytes: int = 1 << 31
    max_array_dims: int = 16

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_header_bytes", "max_message_bytes", "max_array_dims"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        if self.max_frames < 3:
            raise ValueError(
                f"Limits.max_frames={self.max_frames} is below the 3 envelope frames every "
                "message carries; use at least 3"
            )
