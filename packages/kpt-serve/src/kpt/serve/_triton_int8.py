"""Weight-only int8 linear as one Triton kernel: int8 weights dequantized in registers.

y[m, n] = scale[n] * sum_k x[m, k] * w[n, k], with w int8 [N, K] and one scale per output
channel. A decode step's linears are bound by reading their weights; this kernel reads one
byte per weight where a bf16 GEMM reads two, and never writes a dequantized copy. Each program
takes BLOCK_M rows and BLOCK_N output channels and walks K in tiles: the int8 tile is widened to
the activations' dtype just before tl.dot, so the tensor cores see an ordinary bf16 GEMM tile.

Only small batches (decode) come here: a prompt's GEMM is bound by compute, and there
dequantizing once to bf16 and calling cuBLAS is as fast (see Int8Linear). The kernel is compiled
on first use, so TRITON_INTERPRET=1 set by a test still selects the interpreter on the CPU.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

# Rows of x one program covers: tl.dot needs 16 at least; decode batches rarely pass 64.
MAX_ROWS = 64


@functools.cache
def _kernel() -> Any:
    import triton
    import triton.language as tl

    def int8_linear_kernel(
        x_ptr,
        w_ptr,
        scale_ptr,
        y_ptr,
        M,
        N,
        K,
        stride_xm,
        stride_wn,
        stride_ym,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        inner = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            k = start + inner
            x = tl.load(
                x_ptr + rows[:, None] * stride_xm + k[None, :],
                mask=(rows[:, None] < M) & (k[None, :] < K),
                other=0.0,
            )
            w = tl.load(
                w_ptr + cols[None, :] * stride_wn + k[:, None],
                mask=(cols[None, :] < N) & (k[:, None] < K),
                other=0,
            )
            acc += tl.dot(x, w.to(x.dtype))
        scale = tl.load(scale_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
        acc = acc * scale[None, :]
        tl.store(
            y_ptr + rows[:, None] * stride_ym + cols[None, :],
            acc.to(y_ptr.dtype.element_ty),
            mask=(rows[:, None] < M) & (cols[None, :] < N),
        )

    return triton.jit(int8_linear_kernel)


def tiles_for(m: int, n: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), the best of a sweep on an H200
    (benchmarks/bench_quantized.py --kernels) for Llama-8B's layers: 256-wide K tiles four
    stages deep keep enough weight bytes in flight; wide N tiles only where N is large."""
    if m <= 16:
        return (16, 64, 256, 4, 3) if n >= 8192 else (16, 32, 256, 4, 4)
    block_m = 32 if m <= 32 else 64
    if n >= 8192:
        return block_m, 64, 128, 4, 3
    return (block_m, 16, 512, 4, 3) if n <= 2048 else (block_m, 32, 256, 4, 4)


def int8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    tiles: tuple[int, int, int, int, int] | None = None,
) -> torch.Tensor:
    """x [M, K] (M <= MAX_ROWS) times int8 weight [N, K]^T, scaled per output channel.
    `tiles`: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); None: tiles_for's."""
    m, k = x.shape
    n = weight.shape[0]
    x = x.contiguous()
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    block_m, block_n, block_k, warps, stages = tiles or tiles_for(m, n)
    grid = (-(-m // block_m), -(-n // block_n))
    _kernel()[grid](
        x, weight, scale, out, m, n, k, x.stride(0), weight.stride(0), out.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out
