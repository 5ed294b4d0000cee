"""bf16 GEMMs whose rows are not 16-byte aligned, on a GPU: what cuBLAS's align-1/2/4 kernels
cost, by which operand is misaligned and over the inner size K. Not run yet (no device was
lent when it was written); the next device session runs it.

The h100-sxm profile has one rate for them (`misaligned_tflops`), fitted on align-1 shapes of
the H100 (4097^3, GPT-2's 50257-wide head at 512 tokens). The H200's whole steps showed where
one rate falls short (simulator/REPORT.md): GPT-2 inference's head (K = 768) ran at about 94
TFLOP/s where the fit says 125; BERT's 30522-wide head ran align-2 kernels at 1.7x align-1's
rate. Each configuration is one F.linear or matmul, named by the form that reads the odd row:

- "output": x [M, K] @ W[N, K]^T with N odd, a vocabulary head's forward;
- "inner": dY [M, N] @ W [N, K] with N odd as the inner size, its input gradient;
- "transposed": dY^T [N, M] @ X [M, K], dY [M, N] read transposed, its weight gradient.

N runs over align-1 (odd), align-2 (2 mod 4) and align-4 (4 mod 8) widths; M and K over
decode-to-training sizes. GPT-2's and BERT's own head shapes (REPORT.md's steps) are left out:
they validate what is fitted on this. Each GEMM's time is the median over REPS calls of the
profiler's kernel time, L2 flushed before each, with each kernel by name (align1/2/4):
measure_fused_sweep.profile_calls.

Usage (device machine): python3 measure_misaligned_gemm.py --out "$OUT"   (285 GEMMs, minutes)
Smoke test on a CPU:    python3 measure_misaligned_gemm.py --out /tmp/x --smoke
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from measure_fused_sweep import REPS, profile_cases
from measure_h100 import sweep_main

WIDTHS = {"align1": (50257, 32001, 8193), "align2": (30522, 32002, 8194),
          "align4": (32004, 8196)}  # fmt: skip
# REPORT.md's steps: (tokens, vocabulary, width) of GPT-2 (training, inference) and BERT.
HELD_OUT = {(2048, 50257, 768), (1024, 50257, 768), (2048, 30522, 768)}


def configs(smoke: bool) -> list[tuple[str, str, int, int, int]]:
    """(form, alignment, M, N, K): the odd row is N elements wide."""
    if smoke:
        return [("output", "align1", 8, 9, 16), ("transposed", "align2", 8, 10, 16)]
    out = []
    for (align, widths), form in itertools.product(WIDTHS.items(),
                                                   ("output", "inner", "transposed")):  # fmt: skip
        for n, m, k in itertools.product(widths, (256, 1024, 4096), (512, 768, 1024, 4096)):
            if (m, n, k) not in HELD_OUT:
                out.append((form, align, m, n, k))
    return out


def gemm(form: str, m: int, n: int, k: int, dev: str):
    bf16 = torch.bfloat16
    if form == "output":
        x, w = torch.randn(m, k, device=dev, dtype=bf16), torch.randn(n, k, device=dev, dtype=bf16)
        return lambda: F.linear(x, w)
    if form == "inner":
        g, w = torch.randn(m, n, device=dev, dtype=bf16), torch.randn(n, k, device=dev, dtype=bf16)
        return lambda: g @ w
    g, x = torch.randn(m, n, device=dev, dtype=bf16), torch.randn(m, k, device=dev, dtype=bf16)
    return lambda: g.t() @ x


def measure(smoke: bool, dev: str) -> list[dict]:
    return profile_cases(
        (({"form": form, "align": align, "m": m, "n": n, "k": k, "flops": 2.0 * m * n * k},
          functools.partial(gemm, form, m, n, k, dev))
         for form, align, m, n, k in configs(smoke)),
        dev,
    )  # fmt: skip


def main() -> None:
    sweep_main(
        __doc__,
        "h200_misaligned_gemm.json",
        lambda smoke, dev: {"reps": REPS, "gemms": measure(smoke, dev)},
    )


if __name__ == "__main__":
    main()
