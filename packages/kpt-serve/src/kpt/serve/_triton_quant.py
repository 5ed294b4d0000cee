"""Triton kernels of the quantized variants on CUDA (compiled on first use, so that
TRITON_INTERPRET=1 set by a test still selects the interpreter on the CPU).

int8_linear: weight-only int8 GEMM, y[m, n] = scale[n] * sum_k x[m, k] * w[n, k], with w int8
[N, K] and one scale per output channel. A decode step's linears are bound by reading their
weights; this kernel reads one byte per weight where a bf16 GEMM reads two, and never writes a
dequantized copy. Each program takes BLOCK_M rows and BLOCK_N output channels and walks K in
tiles: the int8 tile is widened to the activations' dtype just before tl.dot, so the tensor
cores see an ordinary bf16 GEMM tile. Only small batches (decode) come here: a prompt's GEMM is
bound by compute, and there widening once and calling cuBLAS is as fast (QuantizedLinear).

fp8_quantize: an activation scaled into float8 by its largest magnitude: one decode row in one
launch (one program, two passes), larger inputs in three spread over the chip, where PyTorch
takes four of its own (a reduction, a floor, a zero, the scaling write). It rounds to nearest even,
as PyTorch's conversion does.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

# Rows int8_linear takes: decode batches; larger ones go to cuBLAS.
MAX_ROWS = 64
# Elements fp8_quantize takes in one program: fast for one decode row (1.9 us for 4,096 and
# 3.6 us for 14,336 elements on an H200, against 9-10 us for PyTorch's four launches) but
# slow for sixteen (12-55 us): larger inputs spread over the chip in blocks of GRID_BLOCK.
QUANTIZE_MAX = 16384
QUANTIZE_BLOCK = 2048  # elements one pass of the one-program kernel handles at a time
GRID_BLOCK = 4096
# Shared memory the int8 kernel's pipelined tiles may take (an H100 has 227 KiB per block).
STAGE_BYTES = 160 * 1024


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


def tiles_for(m: int, n: int, x_bytes: int = 2) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), the best of a sweep on an H200
    (benchmarks/bench_quantized.py --kernels) for Llama-8B's layers in bf16: 256-wide K tiles
    four stages deep keep enough weight bytes in flight; wide N tiles only where N is large.
    K tiles narrow until the stages fit in shared memory (float32 activations take twice)."""
    if m <= 16:
        tiles = (16, 64, 256, 4, 3) if n >= 8192 else (16, 32, 256, 4, 4)
    else:
        block_m = 32 if m <= 32 else 64
        if n >= 8192:
            tiles = (block_m, 64, 128, 4, 3)
        else:
            tiles = (block_m, 16, 512, 4, 3) if n <= 2048 else (block_m, 32, 256, 4, 4)
    block_m, block_n, block_k, warps, stages = tiles
    while block_k > 32 and (block_m * x_bytes + block_n) * block_k * stages > STAGE_BYTES:
        block_k //= 2
    return block_m, block_n, block_k, warps, stages


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
    block_m, block_n, block_k, warps, stages = tiles or tiles_for(m, n, x.element_size())
    grid = (-(-m // block_m), -(-n // block_n))
    _kernel()[grid](
        x, weight, scale, out, m, n, k, x.stride(0), weight.stride(0), out.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


@functools.cache
def _quantize_kernel() -> Any:
    import triton
    import triton.language as tl

    def fp8_quantize_kernel(x_ptr, out_ptr, top_ptr, numel, reach, BLOCK: tl.constexpr):
        offsets = tl.arange(0, BLOCK)
        top = tl.zeros((BLOCK,), dtype=tl.float32)
        for start in range(0, numel, BLOCK):
            x = tl.load(x_ptr + start + offsets, mask=start + offsets < numel, other=0.0)
            top = tl.maximum(top, tl.abs(x.to(tl.float32)))
        largest = tl.maximum(tl.max(top, axis=0), 1e-12)
        tl.store(top_ptr, largest)
        factor = reach / largest
        for start in range(0, numel, BLOCK):
            mask = start + offsets < numel
            x = tl.load(x_ptr + start + offsets, mask=mask, other=0.0)
            scaled = x.to(tl.float32) * factor
            narrow = scaled.to(out_ptr.dtype.element_ty, fp_downcast_rounding="rtne")
            tl.store(out_ptr + start + offsets, narrow, mask=mask)

    return triton.jit(fp8_quantize_kernel)


@functools.cache
def _grid_quantize_kernels() -> tuple[Any, Any]:
    import triton
    import triton.language as tl

    def fp8_amax_kernel(x_ptr, top_ptr, numel, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offsets, mask=offsets < numel, other=0.0)
        tl.atomic_max(top_ptr, tl.max(tl.abs(x.to(tl.float32)), axis=0))

    def fp8_scale_kernel(x_ptr, out_ptr, top_ptr, numel, reach, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        factor = reach / tl.maximum(tl.load(top_ptr), 1e-12)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
        scaled = x.to(tl.float32) * factor
        narrow = scaled.to(out_ptr.dtype.element_ty, fp_downcast_rounding="rtne")
        tl.store(out_ptr + offsets, narrow, mask=mask)

    return triton.jit(fp8_amax_kernel), triton.jit(fp8_scale_kernel)


def fp8_quantize(
    rows: torch.Tensor, dtype: torch.dtype, reach: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows * reach / max|rows| as `dtype`, max|rows| as a float32 scalar). Up to
    QUANTIZE_MAX elements in one launch (the maximum floored at 1e-12, as the PyTorch path
    floors it); more in three over the whole chip: a zeroed maximum, every block's maximum
    folded in with an atomic max, then the scaling."""
    rows = rows.contiguous()
    numel = rows.numel()
    out = torch.empty(rows.shape, dtype=dtype, device=rows.device)
    if numel <= QUANTIZE_MAX:
        top = torch.empty((), dtype=torch.float32, device=rows.device)
        _quantize_kernel()[(1,)](rows, out, top, numel, reach, BLOCK=QUANTIZE_BLOCK)
        return out, top
    top = torch.zeros((), dtype=torch.float32, device=rows.device)
    amax, scale = _grid_quantize_kernels()
    grid = (-(-numel // GRID_BLOCK),)
    amax[grid](rows, top, numel, BLOCK=GRID_BLOCK)
    scale[grid](rows, out, top, numel, reach, BLOCK=GRID_BLOCK)
    return out, top
