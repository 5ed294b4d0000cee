"""Registers ``kpt_sim`` in torch's PrivateUse1 slot and gives factories a place to allocate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kpt.adapters.sim._autocast import register as register_autocast_policy
from kpt.adapters.sim._dispatch import dispatch, register_kernels
from kpt.adapters.sim._tensor import DEVICE_TYPE, SimTensor


@dataclass(frozen=True)
class Registration:
    """What register() put into torch. A torch.library registration lasts as long as its
    Library object: ``kpt.adapters.sim`` keeps this one for the life of the process."""

    kernels: torch.library.Library  # aten kernels for PrivateUse1, autograd and autocast
    autocast_fallthrough: torch.library.Library  # every other op passes AutocastPrivateUse1


def _device_index(device: Any) -> int:
    from kpt.adapters.sim._runtime import runtime

    rt = runtime()
    index = None if device is None else torch.device(device).index
    return rt.check_device(index)


def _empty_strided(size, stride, *, dtype=None, layout=None, device=None, pin_memory=None):
    dtype = dtype or torch.get_default_dtype()
    return _allocated(device, torch.empty_strided(size, stride, dtype=dtype, device="meta"))


def _empty_memory_format(
    size, *, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None
):
    dtype = dtype or torch.get_default_dtype()
    meta = torch.empty(size, dtype=dtype, device="meta", memory_format=memory_format)
    return _allocated(device, meta)


def _allocated(device: Any, meta: torch.Tensor) -> torch.Tensor:
    """A new tensor like `meta`: an op that launches nothing, told with the next launch."""
    from kpt.adapters.sim._runtime import runtime
    from kpt.adapters.sim._transfer import new_tensor

    index = _device_index(device)
    runtime().state[index].host_ops += 1
    return new_tensor(index, meta)


def _host_factory(op: Any) -> Any:
    """Factories whose aten kernel resizes an out tensor: build on the host, then upload."""

    def factory(*args: Any, device: Any = None, **kwargs: Any) -> Any:
        from kpt.adapters.sim._transfer import new_tensor, upload_into

        host = op(*args, **kwargs, device="cpu")
        made = new_tensor(_device_index(device), host.to("meta"))
        upload_into(made, host)
        return made

    return factory


def _gru_cell(igates, hgates, hx, input_bias=None, hidden_bias=None):
    # torch picks the fused CUDA cell for every non-CPU device; this is its math in plain ops,
    # registered under autograd so the backward comes from those ops.
    if input_bias is not None:
        igates = igates + input_bias
    if hidden_bias is not None:
        hgates = hgates + hidden_bias
    i_r, i_z, i_n = igates.chunk(3, 1)
    h_r, h_z, h_n = hgates.chunk(3, 1)
    reset = torch.sigmoid(i_r + h_r)
    update = torch.sigmoid(i_z + h_z)
    new = torch.tanh(i_n + reset * h_n)
    hy = new + update * (hx - new)
    return hy, torch.empty(0, dtype=hy.dtype, device=hy.device)


def _lstm_cell(igates, hgates, cx, input_bias=None, hidden_bias=None):
    gates = igates + hgates
    if input_bias is not None:
        gates = gates + input_bias
    if hidden_bias is not None:
        gates = gates + hidden_bias
    i, f, g, o = gates.chunk(4, 1)
    cy = torch.sigmoid(f) * cx + torch.sigmoid(i) * torch.tanh(g)
    hy = torch.sigmoid(o) * torch.tanh(cy)
    return hy, cy, torch.empty(0, dtype=hy.dtype, device=hy.device)


def _copy_from(self, dst, non_blocking=False):
    # Reached when torch copies with the Python key turned off (torch.tensor(data, device=...)).
    return dispatch(torch.ops.aten.copy_.default, (dst, self), {})


def register() -> Registration:
    """Make torch.device('kpt_sim') usable; once per process (``import kpt.adapters.sim`` does
    it and keeps the Registration)."""
    if SimTensor.dispatcher is not None:
        raise RuntimeError(
            "kpt_sim is already registered in this process (kpt.adapters.sim keeps its "
            "Registration): import kpt.adapters.sim instead of calling register() again"
        )
    from kpt.adapters.sim import _module
    from kpt.adapters.sim._autograd_guard import enable as enable_multi_device_autograd
    from kpt.adapters.sim._autograd_guard import install_runtime_hooks
    from kpt.adapters.sim._fused import register_foreach_support
    from kpt.adapters.sim._serialization import register as register_checkpoint_restore
    from kpt.hal import register_python_device

    register_python_device(DEVICE_TYPE, _module, install_hooks=install_runtime_hooks)
    enable_multi_device_autograd()  # before any backward sizes the engine's device queues
    register_checkpoint_restore()
    register_foreach_support()  # optimizers pick foreach / fused kernels as on CUDA (_fused.py)
    library = torch.library.Library("aten", "IMPL")
    library.impl("empty_strided", _empty_strided, "PrivateUse1")
    library.impl("empty.memory_format", _empty_memory_format, "PrivateUse1")
    aten = torch.ops.aten
    for name, op in [
        ("arange", aten.arange.default),
        ("arange.start", aten.arange.start),
        ("arange.start_step", aten.arange.start_step),
        ("linspace", aten.linspace.default),
        ("logspace", aten.logspace.default),
        ("eye", aten.eye.default),
        ("eye.m", aten.eye.m),
        ("randperm", aten.randperm.default),
        ("tril_indices", aten.tril_indices.default),
        ("triu_indices", aten.triu_indices.default),
    ]:
        library.impl(name, _host_factory(op), "PrivateUse1")
    library.impl("_copy_from", _copy_from, "PrivateUse1")
    library.impl("_thnn_fused_gru_cell", _gru_cell, "AutogradPrivateUse1")
    library.impl("_thnn_fused_lstm_cell", _lstm_cell, "AutogradPrivateUse1")
    register_kernels(library)  # fused attention and LSTM (_fused.py)
    register_autocast_policy(library)
    fallthrough = torch.library.Library("_", "IMPL")
    fallthrough.fallback(torch.library.fallthrough_kernel, "AutocastPrivateUse1")
    SimTensor.dispatcher = dispatch  # last: set only once everything above is registered
    return Registration(library, fallthrough)
