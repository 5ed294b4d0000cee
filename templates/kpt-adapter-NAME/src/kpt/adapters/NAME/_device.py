"""Registers the NAME device in torch's PrivateUse1 slot, on first use (never at import).

torch has ONE PrivateUse1 slot per process: registering at import would take it from any
other backend as soon as `kpt devices` imports every adapter. The adapter registers in
capabilities(), i.e. once a probe found a chip and someone asked for it; users may call
kpt.adapters.NAME.register() themselves.
"""

from __future__ import annotations

from typing import Any

import torch

from kpt.adapters.NAME import _module
from kpt.adapters.NAME._tensor import DEVICE_TYPE, Allocation, NameTensor, new_tensor

# torch keeps an op registration only while its Library object lives: one per process, as the
# PrivateUse1 slot is.
_libraries: list[torch.library.Library] = []


def _index(device: Any) -> int:
    return 0 if device is None else (torch.device(device).index or 0)


def _empty_strided(size, stride, *, dtype=None, layout=None, device=None, pin_memory=None):
    host = torch.empty_strided(size, stride, dtype=dtype or torch.get_default_dtype())
    return new_tensor(_index(device), host)


def _empty(size, *, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    # Size the request on the meta device first: the runtime refuses it before host memory.
    meta = torch.empty(size, dtype=dtype or torch.get_default_dtype(), device="meta")
    nbytes = meta.untyped_storage().nbytes()
    allocation = Allocation(_index(device), nbytes)
    host = torch.empty(
        size, dtype=meta.dtype, memory_format=memory_format or torch.contiguous_format
    )
    return NameTensor(host, allocation)


def _copy_from(source, destination, non_blocking=False):
    # host -> device and device -> host copies that bypass __torch_dispatch__
    if isinstance(destination, NameTensor):
        destination._buffer.copy_(source._buffer if isinstance(source, NameTensor) else source)
    else:
        destination.copy_(source._buffer)
    return destination


def register() -> None:
    """Make torch.device("NAME") usable in this process; idempotent."""
    if _libraries:
        return
    from kpt.hal import register_python_device

    register_python_device(DEVICE_TYPE, _module)
    library = torch.library.Library("aten", "IMPL")
    library.impl("empty_strided", _empty_strided, "PrivateUse1")
    library.impl("empty.memory_format", _empty, "PrivateUse1")
    library.impl("_copy_from", _copy_from, "PrivateUse1")
    _libraries.append(library)
