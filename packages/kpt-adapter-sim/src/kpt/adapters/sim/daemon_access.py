"""Where kpt_sim tensors live in the daemon, for packages that send it messages beside torch.

kpt.collectives posts each rank's part of a collective on this process's own connection (the
daemon checks that the buffers belong to the client that posts them), queued in order after the
ops that produced the tensor.
"""

from __future__ import annotations

from typing import Any

import torch

from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim._tensor import DEVICE_TYPE, SimTensor
from kpt.adapters.sim_executor import dtype_name
from kpt.sim import TensorRef


def client() -> Any:
    """This process's connection to the daemon (a SimClient, seen through
    KPT_SIM_VISIBLE_DEVICES); connects, or starts the embedded daemon, on first use."""
    return runtime().client


def endpoint() -> str:
    """The daemon's endpoint: processes that print the same one share its devices."""
    return str(runtime().client.endpoint)


def daemon_device(index: int) -> int:
    """The daemon's index of this process's kpt_sim device ``index``."""
    connection = runtime().client
    index = runtime().check_device(index)
    mapping = getattr(connection, "daemon_index", None)
    return index if mapping is None else int(mapping(index))


def current_stream(index: int) -> int:
    """The stream number this process's work on kpt_sim device ``index`` is queued on."""
    current = runtime()
    return current.state[current.check_device(index)].stream


def tensor_ref(tensor: torch.Tensor) -> TensorRef:
    """(buffer, byte offset, dtype, shape, strides) of a kpt_sim tensor in daemon memory."""
    buffer, offset, dtype, shape, strides = wire_ref(tensor)
    return TensorRef(buffer, offset, dtype, tuple(shape), tuple(strides))


def wire_ref(tensor: torch.Tensor) -> list:
    """tensor_ref in the form SimClient sends and takes as is ([buffer, offset, dtype, shape,
    strides], lists): for a caller that names tensors on every step (a collective's post),
    nothing to convert on the way."""
    if not isinstance(tensor, SimTensor):
        raise TypeError(
            f"expected a {DEVICE_TYPE} tensor, got one on {tensor.device}; move it with "
            f".to('{DEVICE_TYPE}') first"
        )
    return [
        tensor._sim.buffer,
        tensor.storage_offset() * tensor.element_size(),
        dtype_name(tensor.dtype),
        list(tensor.shape),
        list(tensor.stride()),
    ]


__all__ = ["client", "current_stream", "daemon_device", "endpoint", "tensor_ref", "wire_ref"]
