"""The array element types allowed on the wire: plain numbers only, never object or structured."""

from __future__ import annotations

import sys

import ml_dtypes
import numpy as np

_NUMPY_NAMES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)
_ML_NAMES = (
    "bfloat16",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "int4",
    "uint4",
)

DTYPES: dict[str, np.dtype] = {name: np.dtype(name) for name in _NUMPY_NAMES}
DTYPES.update(
    {name: np.dtype(getattr(ml_dtypes, name)) for name in _ML_NAMES if hasattr(ml_dtypes, name)}
)
_ML_SET = {name for name in _ML_NAMES if name in DTYPES}
NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"


def describe(dtype: np.dtype) -> tuple[str, str]:
    """(name, byte order '<', '>' or '|') for an allowed dtype; ValueError for any other."""
    name = dtype.name
    if name not in DTYPES or DTYPES[name].kind != dtype.kind:
        raise ValueError(
            f"dtype {dtype!r} cannot go on the wire; allowed: {', '.join(sorted(DTYPES))}"
        )
    if dtype.itemsize == 1 or name in _ML_SET:
        return name, "|" if dtype.itemsize == 1 else NATIVE_ORDER
    order = dtype.byteorder
    return name, NATIVE_ORDER if order in ("=", "|") else order


def resolve(name: object, order: object) -> np.dtype | None:
    """The dtype a header names, or None if the pair is not allowed."""
    if not isinstance(name, str) or name not in DTYPES:
        return None
    dtype = DTYPES[name]
    if order == "|" or dtype.itemsize == 1:
        return dtype if order in ("|", "<", ">") else None
    if order == NATIVE_ORDER:
        return dtype
    if order in ("<", ">") and name not in _ML_SET:
        return dtype.newbyteorder(order)
    return None
