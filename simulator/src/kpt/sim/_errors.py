"""Typed simulator errors. Importable without torch; the daemon sends them by name."""

from __future__ import annotations


class SimError(Exception):
    """Base of every error the simulator raises on purpose."""


class InvalidRequestError(SimError, ValueError):
    """A request the simulator cannot honour: bad op, shape, dtype, freed or foreign buffer."""


class OutOfMemoryError(SimError, MemoryError):
    """An allocation larger than the device's free memory (message names requested/free/total)."""

    def __init__(
        self,
        message: str,
        *,
        device: int | None = None,
        requested: int | None = None,
        free: int | None = None,
        total: int | None = None,
    ) -> None:
        self.device, self.requested, self.free, self.total = device, requested, free, total
        super().__init__(message)

    @classmethod
    def for_request(cls, device: int, requested: int, free: int, total: int) -> OutOfMemoryError:
        return cls(
            f"device {device} out of memory: requested {requested} bytes, "
            f"free {free} of {total} bytes; free buffers or use a smaller batch",
            device=device,
            requested=requested,
            free=free,
            total=total,
        )


class DeviceLostError(SimError):
    """The device fell off the bus; all its work and buffers are gone."""


class DeviceHangError(SimError):
    """Work on the device never completed within the hang timeout."""


class MemoryFaultError(SimError):
    """Uncorrectable ECC error in a buffer that the work touched."""


class LinkDownError(SimError):
    """A chip-to-chip or network link on the transfer's path is down."""


class AccessDeniedError(SimError, PermissionError):
    """An operation that affects other clients (reset, faults, their traces) without the
    daemon owner's token."""


ERRORS: dict[str, type[SimError]] = {
    cls.__name__: cls
    for cls in (
        SimError,
        InvalidRequestError,
        OutOfMemoryError,
        DeviceLostError,
        DeviceHangError,
        MemoryFaultError,
        LinkDownError,
        AccessDeniedError,
    )
}
