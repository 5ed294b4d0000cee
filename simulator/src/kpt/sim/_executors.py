"""Executor plugins: what computes values for the daemon (entry-point group kpt.sim.executors).

The daemon never runs code that arrives on the wire. An op is a NAME; an executor looks it up in
its own registry (numpy functions, or an allow-list of torch aten ops) and runs it on views of
buffers it allocated itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from importlib.metadata import entry_points
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

EXECUTOR_GROUP = "kpt.sim.executors"

#: Element types a TensorRef may name, with their size in bytes.
DTYPE_SIZES: dict[str, int] = {
    "bool": 1,
    "uint8": 1,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
    "complex64": 8,
    "complex128": 16,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}


class View(NamedTuple):
    """A strided window into one buffer's storage; strides count elements, not bytes.

    `storage` is None in timing-only mode (nothing is allocated, only estimate() is called).
    """

    storage: Any
    offset: int  # bytes from the start of the buffer
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def itemsize(self) -> int:
        return DTYPE_SIZES[self.dtype]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    def byte_extent(self) -> tuple[int, int]:
        """[first, last) byte this view touches, relative to the start of its buffer."""
        if self.numel == 0:
            return self.offset, self.offset
        low = high = 0
        for size, stride in zip(self.shape, self.strides):
            span = (size - 1) * stride
            if span < 0:
                low += span
            else:
                high += span
        return self.offset + low * self.itemsize, self.offset + (high + 1) * self.itemsize


@runtime_checkable
class Executor(Protocol):
    """Computes values for the daemon. One instance serves every device of one daemon."""

    def allocate(self, nbytes: int) -> Any:
        """Backing storage for one buffer, zero-filled: a new buffer must never show bytes
        another client freed (the daemon is shared, as a GPU is by processes)."""

    def write(self, storage: Any, offset: int, data: memoryview) -> None:
        """Copy host bytes into storage at a byte offset."""

    def read(self, storage: Any, offset: int, nbytes: int) -> np.ndarray:
        """Bytes of storage as a uint8 array (a copy: the caller may send it later)."""

    def run(self, op: str, inputs: list[View], outputs: list[View], attrs: dict) -> None:
        """Compute `op` into the outputs; raise ValueError/KeyError naming what was wrong."""

    def estimate(self, op: str, inputs: list[View], outputs: list[View], attrs: dict) -> Any:
        """OpCost(op_class, flops, bytes) for the engine's cost model; works without storage."""


class ExecutorNotFoundError(LookupError):
    """The named executor is not registered under the kpt.sim.executors entry-point group."""


@cache
def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=EXECUTOR_GROUP)}


def executor_names() -> list[str]:
    """Names registered under the kpt.sim.executors entry-point group (plus the built-in numpy)."""
    return sorted({"numpy", *_registered()})


def load_executor(name: str, **options: Any) -> Executor:
    """Instantiate the executor registered as `name`; errors say what is available and why not."""
    entry = _registered().get(name)
    if entry is None:
        if name == "numpy":  # usable even from a source tree whose entry points are not installed
            from kpt.sim._numpy_executor import NumpyExecutor

            return _construct(name, NumpyExecutor, options)
        raise ExecutorNotFoundError(
            f"executor {name!r} not found: misspelled or not installed; "
            f"registered executors: {', '.join(executor_names())}"
        )
    try:
        cls = entry.load()
    except (
        Exception
    ) as exc:  # keep the reason: a plugin that fails to load is never skipped quietly
        raise ExecutorNotFoundError(
            f"executor {name!r} ({entry.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    executor = _construct(name, cls, options)
    missing = [
        m for m in ("allocate", "write", "read", "run", "estimate") if not hasattr(executor, m)
    ]
    if missing:
        raise ExecutorNotFoundError(
            f"executor {name!r} ({entry.value}) lacks method(s) {', '.join(missing)}"
        )
    return executor


def _construct(name: str, cls: Any, options: dict[str, Any]) -> Any:
    try:
        return cls(**options)
    except TypeError as exc:
        raise ExecutorNotFoundError(
            f"executor {name!r} rejected options {sorted(options)}: {exc}"
        ) from None


def check_views(views: Sequence[View], what: str) -> None:
    """Reject malformed views before any executor sees them (sizes are bounded, dtype known)."""
    for i, view in enumerate(views):
        if view.dtype not in DTYPE_SIZES:
            raise ValueError(
                f"{what}[{i}]: unknown dtype {view.dtype!r}; known: {', '.join(DTYPE_SIZES)}"
            )
        if len(view.shape) != len(view.strides):
            raise ValueError(
                f"{what}[{i}]: shape {list(view.shape)} and strides {list(view.strides)} "
                "differ in length"
            )
        if any(s < 0 for s in view.shape):
            raise ValueError(f"{what}[{i}]: negative size in shape {list(view.shape)}")
        if view.offset < 0:
            raise ValueError(f"{what}[{i}]: negative byte offset {view.offset}")
