"""SimTensor: a handle (buffer, offset, dtype, shape, strides) into daemon storage."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim._storage import SimStorage
from kpt.adapters.sim_hal._errors import as_torch_error
from kpt.sim import SimError

DEVICE_TYPE = "kpt_sim"


def sim_device(index: int) -> torch.device:
    """torch.device("kpt_sim", index), built once per index (in the Runtime's PlanCache)."""
    devices = runtime().plans.devices
    device = devices.get(index)
    if device is None:
        device = devices[index] = torch.device(DEVICE_TYPE, index)
    return device


class SimTensor(torch.Tensor):
    """A wrapper tensor whose data lives in the simulator daemon; views share one SimStorage."""

    # No __slots__: torch.utils.swap_tensors (how Module.to moves parameters of wrapper
    # subclasses) needs the same slots as a plain CPU Parameter. Swapping in place is what keeps
    # tied parameters (GPT's wte / lm_head) one Parameter on the device.
    _sim: SimStorage
    untyped_storage = SimStorage.untyped_storage_of  # FSDP2 resizes storages: _storage.py
    # Every aten op on a SimTensor: kpt.adapters.sim._dispatch.dispatch, bound by
    # _device.register(). Bound, not imported, so the tensor type stays a leaf module.
    dispatcher: Any = None

    @staticmethod
    def __new__(
        cls,
        storage: SimStorage,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        offset: int,
        dtype: torch.dtype,
        requires_grad: bool = False,
    ) -> SimTensor:
        tensor = torch.Tensor._make_wrapper_subclass(
            cls,
            size,
            strides=stride,
            storage_offset=offset,
            dtype=dtype,
            device=sim_device(storage.device),
            requires_grad=requires_grad,
        )
        tensor._sim = storage
        return tensor

    __torch_function__ = torch._C._disabled_torch_function_impl

    # The traceable-wrapper protocol, so that Module._apply swaps parameters in place instead of
    # making a new Parameter per module (which unties shared weights). No inner tensors: the
    # data is the daemon buffer named by _sim.
    def __tensor_flatten__(self) -> tuple[list[str], Any]:
        if torch.compiler.is_compiling():
            _refuse_tracing()
        return [], (self._sim, self.dtype)

    @staticmethod
    def __tensor_unflatten__(
        inner: dict, context: Any, size: Any, stride: Any, offset: Any = 0
    ) -> SimTensor:
        storage, dtype = context
        return SimTensor(storage, tuple(size), tuple(stride), int(offset or 0), dtype)

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        try:
            return cls.dispatcher(func, args, kwargs or {})
        except SimError as error:  # what _errors.translated() does, without a context manager
            raise as_torch_error(error) from error

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        with torch.no_grad():
            host = to_host(self)
        text = repr(host)
        suffix = f", device='{self.device}'"
        if text.endswith(")"):
            text = text[:-1] + suffix + ")"
        if self.grad_fn is not None:
            text = text[:-1] + f", grad_fn=<{type(self.grad_fn).__name__}>)"
        elif self.requires_grad:
            text = text[:-1] + ", requires_grad=True)"
        return text

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Tensors travel by value through the CPU (torch.save, deepcopy, multiprocessing), with
        # the rebuild function PyTorch uses for storage-less PrivateUse1 tensors: it is on
        # torch.load's weights_only allow-list, honours map_location, and needs no kpt to load
        # on the CPU. The copy is compact, so a view saves only its own elements.
        if getattr(self, "_is_param", False):  # nn.Parameter(kpt_sim tensor) marks the tensor
            return (torch._utils._rebuild_parameter, (self.detach(), self.requires_grad, {}))
        return (
            torch._utils._rebuild_device_tensor_from_cpu_tensor,
            (to_host(self).clone(), self.dtype, str(self.device), self.requires_grad),
        )


COMPILE_MESSAGE = (
    "kpt_sim: torch.compile cannot trace kpt_sim tensors (their values live in the simulator "
    "daemon and they have no fake-tensor form), so frames that touch them run eagerly: values "
    "are right and each op's simulated time is charged. With fullgraph=True this is an error: "
    "drop fullgraph=True for kpt_sim, or compile on cpu/cuda"
)


def _refuse_tracing() -> None:
    """Dynamo met a kpt_sim tensor: an Unsupported error makes it run the frame eagerly (or
    fail with this message under fullgraph=True), instead of an internal error."""
    from torch._dynamo.exc import Unsupported

    warnings.warn(COMPILE_MESSAGE, UserWarning, stacklevel=2)
    raise Unsupported(COMPILE_MESSAGE)


def byte_extent(tensor: torch.Tensor) -> tuple[int, int]:
    """[first, last) byte of its storage that a tensor view touches."""
    itemsize = tensor.element_size()
    if tensor.numel() == 0:
        start = tensor.storage_offset() * itemsize
        return start, start
    low = high = 0
    for size, stride in zip(tensor.shape, tensor.stride()):
        span = (size - 1) * stride
        if span < 0:
            low += span
        else:
            high += span
    base = tensor.storage_offset()
    return (base + low) * itemsize, (base + high + 1) * itemsize


def read_storage(storage: SimStorage, start: int, stop: int) -> torch.Tensor:
    """Blocking read of bytes [start, stop) of a buffer into a fresh CPU uint8 tensor."""
    if stop <= start:
        return torch.empty(0, dtype=torch.uint8)
    data = runtime().client.read(storage.buffer, start, stop - start)
    array = np.asarray(data, dtype=np.uint8)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def to_host(tensor: SimTensor) -> torch.Tensor:
    """A CPU copy of a kpt_sim tensor (waits for the work that produces it)."""
    start, stop = byte_extent(tensor)
    raw = read_storage(tensor._sim, start, stop)
    itemsize = tensor.element_size()
    if tensor.numel() == 0:
        return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype)
    typed = raw.view(tensor.dtype)
    first = tensor.storage_offset() - start // itemsize
    return typed.as_strided(tuple(tensor.shape), tuple(tensor.stride()), first)
