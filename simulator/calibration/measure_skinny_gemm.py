"""Skinny bf16 GEMMs on a GPU: the decode-time products of a serving engine (a few rows times
a large weight), which stream the weight from HBM and do little arithmetic.

This is validation data for the skinny-GEMM pricing of the derived h200 profile: nothing here
is fitted. The weights are Llama-3-8B's and GPT-2 small's layers (kpt-serve's benchmarks) and
the rows run from one decode sequence to a 256-row prompt chunk. Each GEMM is one F.linear
(x [M, K] times W [N, K] transposed, as a model's layer runs it), timed as the median over REPS
calls of the profiler's kernel time with L2 flushed before each, and each kernel by name
(measure_fused_sweep.profile_calls): cuBLAS picks gemv, split-K and tensor-core kernels by M.

Usage (device machine): python3 measure_skinny_gemm.py --out "$OUT"   (90 GEMMs, under a minute)
Smoke test on a CPU:    python3 measure_skinny_gemm.py --out /tmp/x --smoke
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from measure_fused_sweep import REPS, profile_cases
from measure_h100 import sweep_main

# (model, layer, N, K): each weight is [N, K].
WEIGHTS = (
    ("llama-8b", "qkv", 6144, 4096),
    ("llama-8b", "o", 4096, 4096),
    ("llama-8b", "gate_up", 28672, 4096),
    ("llama-8b", "down", 4096, 14336),
    ("llama-8b", "head", 128256, 4096),
    ("gpt2", "qkv", 2304, 768),
    ("gpt2", "proj", 768, 768),
    ("gpt2", "fc", 3072, 768),
    ("gpt2", "fc_proj", 768, 3072),
    ("gpt2", "head", 50257, 768),
)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def configs(smoke: bool) -> list[tuple[str, str, int, int, int]]:
    """(model, layer, M, N, K)."""
    if smoke:
        return [("tiny", "a", 1, 16, 32), ("tiny", "b", 4, 24, 16)]
    return [(model, layer, m, n, k) for (model, layer, n, k), m in itertools.product(WEIGHTS, ROWS)]


def layer(m: int, n: int, k: int, dev: str):
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    return lambda: F.linear(x, w)


def measure(smoke: bool, dev: str) -> list[dict]:
    return profile_cases(
        (({"model": model, "layer": name, "m": m, "n": n, "k": k, "flops": 2.0 * m * n * k,
           "bytes": 2.0 * (m * k + n * k + m * n)}, functools.partial(layer, m, n, k, dev))
         for model, name, m, n, k in configs(smoke)),
        dev,
    )  # fmt: skip


def main() -> None:
    sweep_main(
        __doc__,
        "h200_skinny_gemm.json",
        lambda smoke, dev: {"reps": REPS, "gemms": measure(smoke, dev)},
    )


if __name__ == "__main__":
    main()
