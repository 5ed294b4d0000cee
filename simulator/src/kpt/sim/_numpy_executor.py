"""The built-in executor: numpy computes the values of a small, named set of ops."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from kpt.sim._executors import DTYPE_SIZES, View
from kpt.sim._op_cost import OpCost

Arrays = list[np.ndarray]


@cache
def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16" or name.startswith("float8"):
        import ml_dtypes  # comes with kpt-wire; only needed for these types

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def _widened(x: np.ndarray) -> np.ndarray:
    """Low-precision floats are computed in float32 and rounded once on store, as GPUs do."""
    if x.dtype.kind == "V" or (x.dtype.kind == "f" and x.dtype.itemsize < 4):
        return x.astype(np.float32)
    return x


def _as_array(view: View) -> np.ndarray:
    dtype = _np_dtype(view.dtype)
    itemsize = dtype.itemsize
    strides = tuple([s * itemsize for s in view.strides])
    if min(strides, default=0) >= 0:  # the common case: one constructor call
        return np.ndarray(view.shape, dtype, view.storage, view.offset, strides)
    low, high = view.byte_extent()
    if high == low:
        return np.empty(view.shape, dtype)
    first = (view.offset - low) // itemsize
    typed = view.storage[low:high].view(dtype)
    return np.lib.stride_tricks.as_strided(typed[first:], view.shape, strides)


def _binary(fn: Callable) -> Callable[[Arrays, dict], np.ndarray]:
    def op(xs: Arrays, attrs: dict) -> np.ndarray:
        if len(xs) == 1 and "scalar" in attrs:
            return fn(xs[0], attrs["scalar"])
        _need(xs, 2)
        return fn(xs[0], xs[1])

    return op


def _unary(fn: Callable) -> Callable[[Arrays, dict], np.ndarray]:
    def op(xs: Arrays, attrs: dict) -> np.ndarray:
        _need(xs, 1)
        return fn(xs[0])

    return op


def _need(xs: Arrays, count: int) -> None:
    if len(xs) != count:
        raise ValueError(f"expects {count} input(s), got {len(xs)}")


def _axis(attrs: dict) -> Any:
    axis = attrs.get("axis")
    return tuple(axis) if isinstance(axis, list) else axis


def _softmax(xs: Arrays, attrs: dict) -> np.ndarray:
    _need(xs, 1)
    axis = attrs.get("axis", -1)
    shifted = xs[0] - xs[0].max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _fill(xs: Arrays, attrs: dict) -> Any:
    _need(xs, 0)
    if "value" not in attrs:
        raise ValueError("needs attrs['value'], the number to fill with")
    return attrs["value"]


def _sum(xs: Arrays, attrs: dict) -> np.ndarray:
    _need(xs, 1)
    return np.sum(xs[0], axis=_axis(attrs), keepdims=bool(attrs.get("keepdims", False)))


def _mean(xs: Arrays, attrs: dict) -> np.ndarray:
    _need(xs, 1)
    return np.mean(xs[0], axis=_axis(attrs), keepdims=bool(attrs.get("keepdims", False)))


def _max(xs: Arrays, attrs: dict) -> np.ndarray:
    _need(xs, 1)
    return np.max(xs[0], axis=_axis(attrs), keepdims=bool(attrs.get("keepdims", False)))


def _matmul(xs: Arrays, attrs: dict) -> np.ndarray:
    _need(xs, 2)
    return np.matmul(xs[0], xs[1])


def _identity(xs: Arrays, attrs: dict) -> np.ndarray:
    _need(xs, 1)
    return xs[0]


#: op name -> (compute function, op class for the cost model, flops per output element)
OPS: dict[str, tuple[Callable[[Arrays, dict], Any], str, int]] = {
    "add": (_binary(np.add), "elementwise", 1),
    "sub": (_binary(np.subtract), "elementwise", 1),
    "mul": (_binary(np.multiply), "elementwise", 1),
    "div": (_binary(np.divide), "elementwise", 1),
    "maximum": (_binary(np.maximum), "elementwise", 1),
    "neg": (_unary(np.negative), "elementwise", 1),
    "exp": (_unary(np.exp), "elementwise", 4),
    "sqrt": (_unary(np.sqrt), "elementwise", 4),
    "tanh": (_unary(np.tanh), "elementwise", 8),
    "relu": (_unary(lambda x: np.maximum(x, 0)), "elementwise", 1),
    "sum": (_sum, "reduction", 1),
    "mean": (_mean, "reduction", 1),
    "max": (_max, "reduction", 1),
    "softmax": (_softmax, "softmax", 5),
    "matmul": (_matmul, "matmul", 0),  # flops counted from shapes
    "fill": (_fill, "elementwise", 0),
    "copy": (_identity, "copy", 0),
}


_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum}
_thread_state = threading.local()


class NumpyExecutor:
    """Values with numpy: storage is a zero-filled uint8 array (pages arrive on first touch)."""

    ops = OPS

    def allocate(self, nbytes: int) -> np.ndarray:
        return np.zeros(nbytes, dtype=np.uint8)

    def write(self, storage: np.ndarray, offset: int, data: memoryview) -> None:
        payload = np.frombuffer(data, dtype=np.uint8)
        storage[offset : offset + payload.size] = payload

    def read(self, storage: np.ndarray, offset: int, nbytes: int) -> np.ndarray:
        return storage[offset : offset + nbytes].copy()

    def run(self, op: str, inputs: list[View], outputs: list[View], attrs: dict) -> None:
        fn = self._lookup(op)[0]
        if len(outputs) != 1:
            raise ValueError(f"op {op!r} writes exactly 1 output, got {len(outputs)}")
        if not getattr(_thread_state, "quiet", False):
            np.seterr(all="ignore")  # inf/nan are values, as on a device (per thread, once)
            _thread_state.quiet = True
        out = _as_array(outputs[0])
        ufunc = _UFUNCS.get(op)
        if (
            ufunc is not None
            and len(inputs) == 2
            and out.dtype.kind in "fiu"
            and (out.dtype.itemsize >= 4 and inputs[0].dtype == inputs[1].dtype == outputs[0].dtype)
        ):  # fast path: straight into the output, no temporary
            ufunc(_as_array(inputs[0]), _as_array(inputs[1]), out=out)
            return
        xs = [_widened(_as_array(v)) for v in inputs]
        result = np.asarray(fn(xs, attrs))
        if result.ndim and result.shape != out.shape:
            raise ValueError(
                f"op {op!r} produces shape {list(result.shape)} but output 0 has shape "
                f"{list(out.shape)}"
            )
        np.copyto(out, result, casting="unsafe")

    def estimate(self, op: str, inputs: list[View], outputs: list[View], attrs: dict) -> Any:
        _, op_class, flops_per_element = self._lookup(op)
        counts = [math.prod(v.shape) for v in (*inputs, *outputs)]
        moved = sum(n * DTYPE_SIZES[v.dtype] for n, v in zip(counts, (*inputs, *outputs)))
        dtype = outputs[0].dtype if outputs else "float32"
        if op_class == "matmul" and len(inputs) == 2 and inputs[0].shape and inputs[1].shape:
            k = inputs[0].shape[-1]
            out_shape = outputs[0].shape if outputs else ()
            rows, cols = (
                (out_shape[-2] if len(out_shape) > 1 else 1),
                (out_shape[-1] if out_shape else 1),
            )
            flops = 2 * k * sum(v.numel for v in outputs)
            return OpCost(op_class, float(flops), float(moved), dtype, (rows, cols, k))
        flops = flops_per_element * max(counts, default=0)
        return OpCost(op_class, float(flops), float(moved), dtype)

    def _lookup(self, op: str) -> tuple[Callable, str, int]:
        try:
            return self.ops[op]
        except KeyError:
            raise KeyError(
                f"op {op!r} is not implemented by the numpy executor; it knows: "
                f"{', '.join(sorted(self.ops))}"
            ) from None
