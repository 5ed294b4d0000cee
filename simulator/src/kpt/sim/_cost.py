"""The cost model: a roofline with saturating efficiency curves, as plain functions.

A calibration script fits a profile by calling `op_time(profile, op_class, flops, bytes, ...)`
against measurements; the engine calls the same function for every op.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from kpt.sim._errors import InvalidRequestError
from kpt.sim._profiles import Profile

# Op classes that run on the matrix units; every other class runs on the vector units.
MATRIX_CLASSES = frozenset({"matmul", "conv", "attention"})
# Names people use for the same class.
CLASS_ALIASES = {
    "bmm": "matmul",
    "linear": "matmul",
    "gemm": "matmul",
    "softmax": "norm",
    "layernorm": "norm",
    "rmsnorm": "norm",
    "embedding": "gather",
    "scatter": "gather",
    "index": "gather",
    "d2d": "copy",
    "sum": "reduction",
}
DTYPE_ALIASES = {
    "fp64": "fp64", "float64": "fp64", "double": "fp64", "f64": "fp64",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "f32": "fp32",
    "tf32": "tf32",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "f16": "fp16",
    "fp8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "float8_e4m3fnuz": "fp8",
    "float8_e5m2fnuz": "fp8",
    "int8": "int8", "uint8": "int8", "bool": "int8",
    # Integer arithmetic wider than 8 bits runs at the fp32 vector rate.
    "int16": "fp32", "int32": "fp32", "int64": "fp32", "uint16": "fp32", "uint32": "fp32",
    "uint64": "fp32", "complex64": "fp32", "complex128": "fp64",
}  # fmt: skip


class OpCost(NamedTuple):
    """What an op costs: its class, FLOPs and HBM bytes moved; dtype and shape refine it."""

    op_class: str
    flops: float = 0.0
    bytes: float = 0.0
    dtype: str = "fp32"
    shape: tuple[int, ...] | None = None


class OpTiming(NamedTuple):
    duration: float  # seconds from start to end, launch latency included
    hbm_busy: float  # seconds of exclusive HBM bandwidth the op uses (shared with other work)


def normalize_class(op_class: str) -> str:
    return CLASS_ALIASES.get(op_class, op_class)


def normalize_dtype(dtype: str) -> str:
    key = str(dtype).removeprefix("torch.").lower()
    try:
        return DTYPE_ALIASES[key]
    except KeyError:
        raise InvalidRequestError(
            f"dtype {dtype!r} unknown to the cost model; use one of {sorted(set(DTYPE_ALIASES))}"
        ) from None


def efficiency(x: float, e_max: float, x_half: float) -> float:
    """Saturating curve: the fraction of peak reached by work of size x."""
    if x_half <= 0:
        return e_max
    return e_max * x / (x + x_half)


def shape_penalty(shape: tuple[int, ...] | None, tile: int) -> float:
    """Fraction of a tile-padded problem that is useful work (1.0 for tile-aligned dims)."""
    if not shape or tile <= 1:
        return 1.0
    useful = 1.0
    for dim in shape:
        if dim > 0:
            useful *= dim / (math.ceil(dim / tile) * tile)
    return useful


def _rates(profile: Profile, op_class: str, dtype: str) -> tuple[float, ...]:
    key = (op_class, dtype)
    table = _RATES.setdefault(profile, {})
    found = table.get(key)
    if found is None:
        unit = "matrix" if op_class in MATRIX_CLASSES else "vector"
        peak = profile.peak_flops[unit][dtype]
        eff = profile.efficiency_for(op_class)
        found = (
            peak,
            eff.compute_e_max,
            eff.compute_x_half,
            eff.memory_e_max,
            eff.memory_x_half,
            eff.tile,
            profile.hbm_bandwidth,
            profile.kernel_launch_s,
            unit,
        )
        table[key] = found
    return found


_RATES: dict[Profile, dict[tuple[str, str], tuple]] = {}


def op_timing(
    profile: Profile,
    op_class: str,
    flops: float,
    nbytes: float,
    dtype: str = "fp32",
    shape: tuple[int, ...] | None = None,
) -> OpTiming:
    """Roofline: launch + max(compute time, memory time), each at its curve's efficiency."""
    op_class = CLASS_ALIASES.get(op_class, op_class)
    dtype = DTYPE_ALIASES.get(dtype) or normalize_dtype(dtype)
    peak, ce, cxh, me, mxh, tile, hbm_bw, launch, unit = _rates(profile, op_class, dtype)
    if flops < 0 or nbytes < 0:
        raise InvalidRequestError(f"op cost must be >= 0, got flops={flops} bytes={nbytes}")
    compute = 0.0
    if flops:
        if peak <= 0:
            raise InvalidRequestError(
                f"{dtype} {op_class} is not supported on {profile.name}'s {unit} units "
                "(peak 0 in its profile); use another dtype"
            )
        eff = ce if cxh <= 0 else ce * flops / (flops + cxh)
        if shape is not None and tile > 1:
            eff *= shape_penalty(shape, tile)
        compute = flops / (peak * eff)
    memory = 0.0
    if nbytes:
        memory = nbytes / (hbm_bw * (me if mxh <= 0 else me * nbytes / (nbytes + mxh)))
    return OpTiming(launch + (compute if compute > memory else memory), memory)


def op_time(
    profile: Profile,
    op_class: str,
    flops: float,
    nbytes: float,
    dtype: str = "fp32",
    shape: tuple[int, ...] | None = None,
) -> float:
    """Predicted seconds for one op on one device, launch latency included."""
    return op_timing(profile, op_class, flops, nbytes, dtype, shape).duration


def transfer_time(nbytes: float, bandwidth: float, latency: float) -> float:
    """Alpha-beta time of one transfer over one link."""
    return latency + nbytes / bandwidth
