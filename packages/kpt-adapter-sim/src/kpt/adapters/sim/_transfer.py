"""Moving bytes: new device tensors, host->device uploads, device<->device copies."""

from __future__ import annotations

from typing import Any

import torch

from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim._tensor import SimTensor, byte_extent
from kpt.adapters.sim_executor import dtype_name
from kpt.adapters.sim_hal._errors import translated

try:
    from kpt.sim import TensorRef
except ImportError:  # pragma: no cover - only before kpt-sim exports it
    from typing import NamedTuple

    class TensorRef(NamedTuple):  # type: ignore[no-redef]
        buffer: int
        offset: int
        dtype: str
        shape: tuple[int, ...]
        strides: tuple[int, ...]


def tensor_ref(tensor: SimTensor) -> TensorRef:
    return TensorRef(
        tensor._sim.buffer,
        tensor.storage_offset() * tensor.element_size(),
        dtype_name(tensor.dtype),
        tuple(tensor.shape),
        tuple(tensor.stride()),
    )


def new_tensor(device: int, like: Any) -> Any:
    """A fresh kpt_sim tensor with the shape, strides and dtype of a meta (or any) tensor."""
    if not isinstance(like, torch.Tensor):
        return like
    _, stop = byte_extent(like)
    with translated():
        storage = runtime().allocator.allocate(device, max(stop, 1))
    return SimTensor(storage, like.shape, like.stride(), like.storage_offset(), like.dtype)


def _is_dense(tensor: torch.Tensor) -> bool:
    """Non-overlapping and covering its byte extent exactly (so raw bytes can be sent)."""
    start, stop = byte_extent(tensor)
    return tensor.is_contiguous() and stop - start == tensor.numel() * tensor.element_size()


# Uploads up to this size are sent without waiting (the bytes are copied first), so a training
# loop's per-step batch does not stall the launch pipeline; bigger ones wait for the daemon.
ASYNC_UPLOAD_BYTES = 16 << 20


def _write(buffer: int, offset: int, host: torch.Tensor) -> None:
    client = runtime().client
    data = _host_bytes(host)
    if host.numel() * host.element_size() <= ASYNC_UPLOAD_BYTES:
        client.write_async(buffer, offset, data)
    else:
        client.write(buffer, offset, data)


def upload_into(dst: SimTensor, src: torch.Tensor) -> None:
    """Host -> device copy into an existing (possibly strided) device tensor."""
    rt = runtime()
    host = src.detach().to(dtype=dst.dtype).expand(dst.shape).contiguous()
    if _is_dense(dst):
        start, _ = byte_extent(dst)
        _write(dst._sim.buffer, start, host)
        return
    staging = new_tensor(dst._sim.device, host.to("meta"))
    _write(staging._sim.buffer, 0, host)
    rt.client.launch(
        dst._sim.device,
        "aten::copy_.default",
        [tensor_ref(dst), tensor_ref(staging)],
        [],
        {"args": [{"__t": 0}, {"__t": 1}], "kwargs": {}},
        stream=rt.state[dst._sim.device].stream,
    )


def _host_bytes(host: torch.Tensor) -> Any:
    return host.reshape(-1).view(torch.uint8).numpy() if host.numel() else b""


def copy_between(src: SimTensor, dst: SimTensor) -> None:
    """Device -> device copy across devices (the simulator charges the link)."""
    if src.shape != dst.shape or src.dtype != dst.dtype or src.stride() != dst.stride():
        # Different layouts: first make a same-layout copy on the source device.
        like = torch.empty_strided(dst.shape, dst.stride(), dtype=dst.dtype, device="meta")
        staged = new_tensor(src._sim.device, like)
        torch.ops.aten.copy_.default(staged, src)
        src = staged
    runtime().client.copy(
        tensor_ref(src), tensor_ref(dst), stream=runtime().state[src._sim.device].stream
    )
