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
    """torch.OutOfMemoryError for a kpt_sim allocation; the message names requested/free/total."""


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


def as_torch_error(error: SimError) -> KptSimError:
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
