"""NameTensor: a tensor on the NAME device, holding its runtime buffer (here a host tensor).

Every aten op on it reaches __torch_dispatch__: arguments are unwrapped to their buffers, the
runtime launches the op, and results are wrapped again. Results that alias an argument (views,
in-place ops) share its Allocation, so memory is given back when the last view is gone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_map

from kpt.adapters.NAME._runtime import runtime

DEVICE_TYPE = "NAME"


class Allocation:
    """Device memory for one buffer; freed with the last tensor that refers to it."""

    def __init__(self, index: int, nbytes: int) -> None:
        self.nbytes = 0  # nothing to give back if allocate() raises (out of memory)
        runtime().allocate(index, nbytes)
        self.index, self.nbytes = index, nbytes

    def __del__(self) -> None:
        if self.nbytes:
            runtime().free(self.index, self.nbytes)


class NameTensor(torch.Tensor):
    _buffer: torch.Tensor  # the runtime's handle; a host tensor in this stand-in
    _allocation: Allocation

    @staticmethod
    def __new__(cls, buffer: torch.Tensor, allocation: Allocation) -> NameTensor:
        tensor = torch.Tensor._make_wrapper_subclass(
            cls, buffer.shape, strides=buffer.stride(), storage_offset=buffer.storage_offset(),
            dtype=buffer.dtype, device=torch.device(DEVICE_TYPE, allocation.index),
            requires_grad=buffer.requires_grad,
        )  # fmt: skip
        tensor._buffer, tensor._allocation = buffer, allocation
        return tensor

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return f"NameTensor({self._buffer!r}, device='{self.device}')"

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and _to_host(kwargs):
            return func(args[0]._buffer, **kwargs)  # device -> host: a plain CPU tensor
        owners = {}  # buffer storage -> its Allocation, for results that alias an argument
        index = 0

        def unwrap(x: Any) -> Any:
            nonlocal index
            if isinstance(x, NameTensor):
                owners[x._buffer.untyped_storage().data_ptr()] = x._allocation
                index = x._allocation.index
                return x._buffer
            if isinstance(x, torch.device) and x.type == DEVICE_TYPE:
                return torch.device("cpu")
            return x

        out = runtime().launch(func, tree_map(unwrap, args), tree_map(unwrap, kwargs))

        def wrap(x: Any) -> Any:
            if not isinstance(x, torch.Tensor) or x.device.type != "cpu":
                return x
            owner = owners.get(x.untyped_storage().data_ptr())
            if owner is None:
                owner = Allocation(index, x.untyped_storage().nbytes())
            return NameTensor(x, owner)

        return tree_map(wrap, out)


def _to_host(kwargs: dict) -> bool:
    device = kwargs.get("device")
    return device is not None and torch.device(device).type == "cpu"


def new_tensor(index: int, host: torch.Tensor) -> NameTensor:
    """Device memory first (OutOfMemoryError before any host memory is spent), then the buffer."""
    allocation = Allocation(index, host.untyped_storage().nbytes())
    return NameTensor(host, allocation)
