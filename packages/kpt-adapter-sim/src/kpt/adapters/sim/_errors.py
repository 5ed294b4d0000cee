"""The torch-facing kpt_sim errors; defined in kpt.adapters.sim_hal (discovery raises them too,
without registering the device), kept importable here for the client's modules."""

from kpt.adapters.sim_hal._errors import (
    KptSimDeviceLostError,
    KptSimError,
    KptSimHangError,
    KptSimInvalidRequestError,
    KptSimLinkDownError,
    KptSimMemoryFaultError,
    KptSimOutOfMemoryError,
    as_torch_error,
    out_of_memory,
    translated,
)

__all__ = [
    "KptSimDeviceLostError",
    "KptSimError",
    "KptSimHangError",
    "KptSimInvalidRequestError",
    "KptSimLinkDownError",
    "KptSimMemoryFaultError",
    "KptSimOutOfMemoryError",
    "as_torch_error",
    "out_of_memory",
    "translated",
]
