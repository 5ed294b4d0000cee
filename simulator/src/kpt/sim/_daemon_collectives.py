"""Collectives with values: the engine times the link transfers, numpy combines the bytes.

Values move through the executor's read/write, so any executor works; tensors must be
contiguous. One tensor per rank, each on a different device; rank order is list order.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from kpt.sim._daemon_buffers import bad, contiguous
from kpt.sim._executors import Executor, View

REDUCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sum": lambda stacked: stacked.sum(axis=0),
    "avg": lambda stacked: stacked.mean(axis=0),
    "max": lambda stacked: stacked.max(axis=0),
    "min": lambda stacked: stacked.min(axis=0),
    "prod": lambda stacked: stacked.prod(axis=0),
    # NCCL's ncclRedOpCreatePreMulSum: each rank scales its own input by its own factor inside
    # the reduction (no kernel of its own); `compute` applies the factors before this sum.
    "premul_sum": lambda stacked: stacked.sum(axis=0),
}
# What the engine's nbytes means per kind: the buffer each rank holds (all_gather: the output).
TIMED_BY_OUTPUT = ("all_gather",)


def scale_factors(op: str, value: object, count: int) -> list[float] | None:
    """premul_sum's factors, one per rank posted (`count`); None for every other op."""
    if op != "premul_sum":
        if value is not None:
            raise bad(f"factors are for op premul_sum, not {op!r:.40}")
        return None
    ok = (
        type(value) is list
        and len(value) == count
        and all(type(f) in (int, float) and math.isfinite(f) for f in value)
    )
    if not ok:
        raise bad(f"premul_sum: give {count} finite factor(s), one per rank; got {value!r:.60}")
    return [float(f) for f in value]


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16" or name.startswith("float8"):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def check_shapes(kind: str, inputs: list[View], outputs: list[View], root: int | None) -> None:
    """Raise InvalidRequestError unless the tensors fit the collective."""
    n = len(inputs)
    if n < 1:
        raise bad(f"collective {kind}: needs one input tensor per rank, got none")
    if kind == "send_recv":
        if n != 1 or len(outputs) != 1:
            raise bad("collective send_recv: needs exactly 1 input (source) and 1 output")
    elif kind in ("all_reduce", "broadcast"):
        if outputs and len(outputs) != n:
            raise bad(f"collective {kind}: {n} inputs but {len(outputs)} outputs; one per rank")
    elif len(outputs) != n:
        raise bad(f"collective {kind}: {n} inputs but {len(outputs)} outputs; one per rank")
    for view in (*inputs, *outputs):
        if not contiguous(view):
            raise bad(f"collective {kind}: tensors must be contiguous, got strides {view.strides}")
        if view.dtype != inputs[0].dtype:
            raise bad(f"collective {kind}: mixed dtypes {view.dtype} and {inputs[0].dtype}")
    size = inputs[0].nbytes
    if any(v.nbytes != size for v in inputs):
        raise bad(f"collective {kind}: inputs differ in size: {[v.nbytes for v in inputs]} bytes")
    out_size = {"all_gather": size * n, "reduce_scatter": size // n}.get(kind, size)
    if kind in ("reduce_scatter", "all_to_all") and size % (n * inputs[0].itemsize):
        raise bad(f"collective {kind}: {size} bytes per rank do not split into {n} equal chunks")
    if outputs and any(v.nbytes != out_size for v in outputs):
        raise bad(
            f"collective {kind}: outputs must hold {out_size} bytes each, got "
            f"{[v.nbytes for v in outputs]}"
        )


def timed_bytes(kind: str, inputs: list[View], outputs: list[View]) -> int:
    return outputs[0].nbytes if kind in TIMED_BY_OUTPUT else inputs[0].nbytes


def compute(
    executor: Executor,
    kind: str,
    inputs: list[View],
    outputs: list[View],
    op: str,
    root: int,
    factors: list[float] | None = None,
) -> None:
    """Combine the ranks' bytes as the collective would and write every output. `factors`: one
    per rank for op premul_sum, as `scale_factors` checked them when they were posted."""
    dtype = _np_dtype(inputs[0].dtype)
    ranks = [executor.read(v.storage, v.offset, v.nbytes).view(dtype) for v in inputs]
    wide = np.dtype(np.float32) if dtype.kind == "V" or dtype.itemsize < 4 else dtype
    if factors is not None and kind in ("all_reduce", "reduce_scatter"):  # the reductions
        wide = wide if wide.kind == "f" else np.dtype(np.float64)  # ints scale in floats
        ranks = [r.astype(wide) * wide.type(f) for r, f in zip(ranks, factors)]
    targets = outputs or inputs  # all_reduce and broadcast may work in place
    n = len(inputs)
    if kind == "all_reduce":
        reduce = REDUCTIONS.get(op)
        if reduce is None:
            raise bad(f"reduction {op!r} unknown; use one of {', '.join(REDUCTIONS)}")
        stacked = np.stack([r.astype(wide, copy=False) for r in ranks])
        results = [reduce(stacked).astype(dtype)] * n
    elif kind == "broadcast":
        results = [ranks[root]] * n
    elif kind == "all_gather":
        results = [np.concatenate(ranks)] * n
    elif kind == "reduce_scatter":
        reduce = REDUCTIONS.get(op)
        if reduce is None:
            raise bad(f"reduction {op!r} unknown; use one of {', '.join(REDUCTIONS)}")
        total = reduce(np.stack(ranks)).astype(dtype)
        results = np.split(total, n)
    elif kind == "all_to_all":
        chunks = [np.split(r, n) for r in ranks]
        results = [np.concatenate([chunks[j][i] for j in range(n)]) for i in range(n)]
    else:  # send_recv
        results = ranks
    for view, values in zip(targets, results):
        raw = np.ascontiguousarray(values).view(np.uint8).reshape(-1)
        executor.write(view.storage, view.offset, memoryview(raw))
