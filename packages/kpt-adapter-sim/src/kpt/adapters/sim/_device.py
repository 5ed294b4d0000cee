"""Registers ``kpt_sim`` in torch's PrivateUse1 slot and gives factories a place to allocate."""

from __future__ import annotations

from typing import Any

import torch

from kpt.adapters.sim._tensor import DEVICE_TYPE

_library: torch.library.Library | None = None


def _device_index(device: Any) -> int:
    from kpt.adapters.sim._runtime import runtime

    rt = runtime()
    index = None if device is None else torch.device(device).index
    return rt.check_device(index)


def _empty_strided(size, stride, *, dtype=None, layout=None, device=None, pin_memory=None):
    from kpt.adapters.sim._transfer import new_tensor

    dtype = dtype or torch.get_default_dtype()
    meta = torch.empty_strided(size, stride, dtype=dtype, device="meta")
    return new_tensor(_device_index(device), meta)


def _empty_memory_format(
    size, *, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None
):
    from kpt.adapters.sim._transfer import new_tensor

    dtype = dtype or torch.get_default_dtype()
    meta = torch.empty(size, dtype=dtype, device="meta", memory_format=memory_format)
    return new_tensor(_device_index(device), meta)


def register() -> None:
    """Make torch.device('kpt_sim') usable; idempotent."""
    global _library
    if _library is not None:
        return
    from kpt.adapters.sim import _module
    try:
        from kpt.hal import register_python_device
    except ImportError:  # kpt-hal before it re-exports the helper
        from kpt.hal._privateuse1 import register_python_device

    register_python_device(DEVICE_TYPE, _module)
    library = torch.library.Library("aten", "IMPL")
    library.impl("empty_strided", _empty_strided, "PrivateUse1")
    library.impl("empty.memory_format", _empty_memory_format, "PrivateUse1")
    _library = library
