"""Simulator errors as torch errors: what PyTorch code already catches, with the sim's detail."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from kpt.sim import (
    DeviceHangError,
    DeviceLostError,
    InvalidRequestError,
    LinkDownError,
    MemoryFaultError,
    OutOfMemoryError,
    SimError,
)


class KptSimError(RuntimeError):
    """Base of the errors a kpt_sim device raises; ``.sim_error`` is the simulator's own."""

    sim_error: SimError | None = None


class KptSimOutOfMemoryError(torch.OutOfMemoryError, KptSimError):
    """torch.OutOfMemoryError for a kpt_sim allocation; the message names requested/free/total.

    ``device`` (this process's index), ``requested``, ``free`` and ``total`` (bytes) are kept as
    attributes; any of them is None when the daemon did not say.
    """

    device: int | None = None
    requested: int | None = None
    free: int | None = None
    total: int | None = None


class KptSimDeviceLostError(KptSimError):
    """The simulator daemon or device is gone; its tensors cannot be used any more."""


class KptSimHangError(KptSimError):
    """Work on the device did not finish within the hang timeout."""


class KptSimMemoryFaultError(KptSimError):
    """An uncorrectable memory (ECC) error hit a buffer the work touched."""


class KptSimLinkDownError(KptSimError):
    """A link on the transfer's path is down."""


class KptSimInvalidRequestError(KptSimError, ValueError):
    """The simulator refused a request (bad op, shape, dtype, freed buffer)."""


_MAPPING: list[tuple[type[SimError], type[KptSimError]]] = [
    (OutOfMemoryError, KptSimOutOfMemoryError),
    (DeviceLostError, KptSimDeviceLostError),
    (DeviceHangError, KptSimHangError),
    (MemoryFaultError, KptSimMemoryFaultError),
    (LinkDownError, KptSimLinkDownError),
    (InvalidRequestError, KptSimInvalidRequestError),
    (SimError, KptSimError),
]


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def out_of_memory(error: OutOfMemoryError) -> KptSimOutOfMemoryError:
    """The torch error for a refused allocation: which device, how much was asked, how much is
    free, and what to do (torch's CUDA OOM message names the same things)."""
    sizes = (error.device, error.requested, error.free, error.total)
    if any(value is None for value in sizes):
        translated = KptSimOutOfMemoryError(f"kpt_sim: {error}")
    else:
        device, requested, free, total = (int(v) for v in sizes)
        translated = KptSimOutOfMemoryError(
            f"kpt_sim:{device} out of memory: requested {requested} bytes "
            f"({_mib(requested)}); {free} bytes ({_mib(free)}) free of {total} "
            f"({_mib(total)}), memory of every process on the daemon counted. Free tensors you "
            "no longer need, call torch.kpt_sim.empty_cache(), or use a smaller batch"
        )
    translated.device, translated.requested, translated.free, translated.total = sizes
    translated.sim_error = error
    return translated


def as_torch_error(error: SimError) -> KptSimError:
    if isinstance(error, OutOfMemoryError):
        return out_of_memory(error)
    for sim_type, torch_type in _MAPPING:
        if isinstance(error, sim_type):
            translated = torch_type(f"kpt_sim: {error}")
            translated.sim_error = error
            return translated
    raise TypeError(f"not a simulator error: {error!r}")


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise simulator errors raised inside as their torch-facing types."""
    try:
        yield
    except KptSimError:
        raise
    except SimError as error:
        raise as_torch_error(error) from error
