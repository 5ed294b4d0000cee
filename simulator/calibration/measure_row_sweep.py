"""Reductions and softmax on a GPU, over shapes the kernel catalogue (measure_h100.py) never ran.

Validation data for the reduction launch model (kpt.sim._reduce_plan, fitted on the H100
catalogue's reductions) and fitting data for softmax: sums, means and amax over the last dim,
the first dim and the two outer dims of a 3-D tensor (a bias gradient's sum over batch and
sequence), full reductions, and softmax over the last dim, in fp32 and bf16, at odd sizes
(a vocabulary of 30522, 100 or 3000 elements) as well as round ones. Each case is timed as the
median over REPS calls of the profiler's kernel time with L2 flushed before each
(measure_fused_sweep.profile_calls).

Usage (device machine): python3 measure_row_sweep.py --out "$OUT"   (about a minute)
Smoke test on a CPU:    python3 measure_row_sweep.py --out /tmp/x --smoke
Writes <gpu>_row_sweep.json (h100_..., h200_...; cpu_... for the smoke test).
"""

from __future__ import annotations

import functools
import itertools

import torch
from measure_fused_sweep import REPS, profile_cases
from measure_h100 import sweep_main

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# (shape, dims): dims None reduces everything.
REDUCTIONS = (
    ((3000,), None), ((20000,), None), ((50000,), None), ((100000,), None),
    ((300000,), None), ((2_000_000,), None), ((30_000_000,), None),
    ((100, 3000), (0,)), ((3000, 100), (0,)), ((100, 3000), (1,)), ((3000, 100), (1,)),
    ((12, 500000), (0,)), ((500000, 12), (0,)), ((12, 500000), (1,)), ((500000, 12), (1,)),
    ((768, 30522), (0,)), ((30522, 768), (0,)), ((768, 30522), (1,)), ((30522, 768), (1,)),
    ((2048, 2048), (0,)), ((2048, 2048), (1,)), ((200, 200), (0,)), ((200, 200), (1,)),
    ((50, 50000), (0,)), ((50000, 50), (0,)), ((50, 50000), (1,)), ((50000, 50), (1,)),
    ((6, 2_000_000), (0,)), ((8, 512, 768), (0, 1)), ((32, 128, 3072), (0, 1)),
    ((64, 256, 56, 56), (0, 2, 3)),
)  # fmt: skip
REDUCTION_OPS = ("sum", "mean", "amax")
SOFTMAX_ROWS = (256, 4096, 65536)
SOFTMAX_COLS = (96, 384, 1000, 1536, 2048, 3000, 6000, 12000, 30522)
SMOKE_REDUCTIONS = (((64,), None), ((8, 16), (0,)), ((8, 16), (1,)))


def reduction_cases(smoke: bool):
    shapes = SMOKE_REDUCTIONS if smoke else REDUCTIONS
    for (shape, dims), op, dtype in itertools.product(shapes, REDUCTION_OPS, DTYPES):
        yield {"kind": "reduction", "op": op, "dtype": dtype, "shape": list(shape),
               "dims": list(dims) if dims else None}  # fmt: skip


def softmax_cases(smoke: bool):
    sizes = [(4, 96)] if smoke else itertools.product(SOFTMAX_ROWS, SOFTMAX_COLS)
    for (rows, cols), dtype in itertools.product(sizes, DTYPES):
        if rows * cols <= 1 << 28:  # 1 GB of fp32 at most
            yield {"kind": "softmax", "op": "softmax", "dtype": dtype, "shape": [rows, cols],
                   "dims": [1]}  # fmt: skip


def call(case: dict, dev: str):
    x = torch.randn(case["shape"], device=dev, dtype=DTYPES[case["dtype"]])
    if case["kind"] == "softmax":
        return lambda: torch.softmax(x, dim=-1)
    fn = getattr(torch, case["op"])
    dims = case["dims"]
    return (lambda: fn(x)) if dims is None else (lambda: fn(x, dim=dims))


def measure(smoke: bool, dev: str) -> list[dict]:
    cases = [*reduction_cases(smoke), *softmax_cases(smoke)]
    return profile_cases(((c, functools.partial(call, c, dev)) for c in cases), dev)


def main() -> None:
    sweep_main(__doc__, "{chip}_row_sweep.json",
               lambda smoke, dev: {"reps": REPS, "cases": measure(smoke, dev)})  # fmt: skip


if __name__ == "__main__":
    main()
