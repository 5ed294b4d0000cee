"""How an aten call's non-tensor arguments travel to the daemon (msgpack-safe, never pickled).

Tensors become ``{"__t": i}`` (index into the launch's inputs); dtypes, devices, layouts and memory
formats become tagged strings; 0-dim CPU tensors (scalars mixed into device ops) travel by value.
The executor decodes the same tree back, with every device replaced by its own (CPU).
"""

from __future__ import annotations

from typing import Any

import torch

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bool: "bool",
    torch.uint8: "uint8",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
    torch.complex64: "complex64",
    torch.complex128: "complex128",
    torch.float8_e4m3fn: "float8_e4m3fn",
    torch.float8_e5m2: "float8_e5m2",
}
DTYPES_BY_NAME: dict[str, torch.dtype] = {v: k for k, v in DTYPE_NAMES.items()}
_MEMORY_FORMATS = {
    torch.contiguous_format: "contiguous_format",
    torch.channels_last: "channels_last",
    torch.preserve_format: "preserve_format",
    torch.channels_last_3d: "channels_last_3d",
}
_MEMORY_FORMATS_BY_NAME = {v: k for k, v in _MEMORY_FORMATS.items()}


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise TypeError(
            f"dtype {dtype} is not supported on kpt_sim; "
            f"supported: {', '.join(DTYPE_NAMES.values())}"
        ) from None


def encode_args(value: Any, tensor_index: dict[int, int]) -> Any:
    """Encode an argument tree; ``tensor_index`` maps id(device tensor) -> input position."""
    if isinstance(value, torch.Tensor):
        index = tensor_index.get(id(value))
        if index is not None:
            return {"__t": index}
        if value.device.type == "cpu" and value.dim() == 0:
            return {"__s": value.item(), "dtype": dtype_name(value.dtype)}
        raise ValueError(
            f"a {value.device} tensor of shape {list(value.shape)} was mixed into a kpt_sim op; "
            "move it with .to('kpt_sim') first"
        )
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [encode_args(v, tensor_index) for v in value]
    if isinstance(value, dict):
        return {k: encode_args(v, tensor_index) for k, v in value.items()}
    if isinstance(value, torch.dtype):
        return {"__dtype": dtype_name(value)}
    if isinstance(value, torch.device):
        return {"__device": value.type}
    if isinstance(value, torch.memory_format):
        return {"__mf": _MEMORY_FORMATS[value]}
    if isinstance(value, torch.layout):
        return {"__layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.Generator):
        return None  # random ops are seeded per device from the launch's "rng" attribute
    if isinstance(value, complex):
        return {"__c": [value.real, value.imag]}
    raise TypeError(f"cannot send argument {value!r} of type {type(value).__name__} to kpt_sim")


def decode_args(value: Any, tensors: list[torch.Tensor]) -> Any:
    """Inverse of encode_args on the executor side; devices all become CPU."""
    if isinstance(value, list):
        return [decode_args(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__t" in value:
        return tensors[value["__t"]]
    if "__s" in value:
        return torch.tensor(value["__s"], dtype=DTYPES_BY_NAME[value["dtype"]])
    if "__dtype" in value:
        return DTYPES_BY_NAME[value["__dtype"]]
    if "__device" in value:
        return torch.device("cpu")
    if "__mf" in value:
        return _MEMORY_FORMATS_BY_NAME[value["__mf"]]
    if "__layout" in value:
        return getattr(torch, value["__layout"])
    if "__c" in value:
        return complex(*value["__c"])
    return {k: decode_args(v, tensors) for k, v in value.items()}
