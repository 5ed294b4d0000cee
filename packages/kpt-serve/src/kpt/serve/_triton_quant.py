"""Triton kernels of the quantized variants on CUDA (compiled on first use, so that
TRITON_INTERPRET=1 set by a test still selects the interpreter on the CPU).

int8_linear: weight-only int8 GEMM, y[m, n] = scale[n] * sum_k x[m, k] * w[n, k], with w int8
[N, K] and one scale per output channel. A decode step's linears are bound by reading their
weights; this kernel reads one byte per weight where a bf16 GEMM reads two, and never writes a
dequantized copy. Each program takes BLOCK_M rows and BLOCK_N output channels and walks K in
tiles (or one share of K, SPLIT_K > 1): the int8 tile is widened to the activations' dtype
just before tl.dot, so the tensor cores see an ordinary bf16 GEMM tile. Decode batches and
prompt chunks up to MAX_ROWS come here; larger prompts widen the weights and call cuBLAS
(QuantizedLinear).

fp8_quantize: an activation scaled into float8 by its largest magnitude: one decode row in one
launch (one program, two passes), larger inputs in three spread over the chip, where PyTorch
takes four of its own (a reduction, a floor, a zero, the scaling write). It scales in float32
and rounds once, to nearest even; PyTorch's path rounds twice (its addcdiv computes in the
activation's bfloat16, then the copy narrows to float8), so 2-7 % of values land one float8
step apart between the two.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

# Rows int8_linear takes: decode batches and prompt chunks up to this many rows. Above it,
# widening the weights in one pass (int8_widen) and running cuBLAS was faster on an H200
# (512 rows: 0.54-0.87x the kernel's time); at 128 the kernel was.
MAX_ROWS = 256
# Elements fp8_quantize takes in one program: fast for one decode row (1.9 us for 4,096 and
# 3.6 us for 14,336 elements on an H200, against 9-10 us for PyTorch's four launches) but
# slow for sixteen (12-55 us): larger inputs spread over the chip in blocks of GRID_BLOCK.
QUANTIZE_MAX = 16384
QUANTIZE_BLOCK = 2048  # elements one pass of the one-program kernel handles at a time
GRID_BLOCK = 4096
# Shared memory the int8 kernel's pipelined tiles may take (an H100 has 227 KiB per block;
# 128 x 64 tiles of bf16, 128 deep, four stages: 160 KiB ran on an H200).
STAGE_BYTES = 200 * 1024
SUM_BLOCK = 1024  # outputs one program of int8_split_sum adds up
WIDEN_BLOCK = 4096  # weights one program of int8_widen scales
# int8_linear's tiles: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, SPLIT_K).
Tiles = tuple[int, int, int, int, int, int]


@functools.cache
def _kernel() -> Any:
    import triton
    import triton.language as tl

    def int8_linear_kernel(
        x_ptr,
        w_ptr,
        scale_ptr,
        y_ptr,
        part_ptr,
        M,
        N,
        K,
        stride_xm,
        stride_wn,
        stride_ym,
        k_span,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        SPLIT_K: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        inner = tl.arange(0, BLOCK_K)
        first = tl.program_id(2) * k_span  # this program's share of K (all of it unsplit)
        last = tl.minimum(first + k_span, K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for start in range(first, last, BLOCK_K):
            k = start + inner
            x = tl.load(
                x_ptr + rows[:, None] * stride_xm + k[None, :],
                mask=(rows[:, None] < M) & (k[None, :] < last),
                other=0.0,
            )
            w = tl.load(
                w_ptr + cols[None, :] * stride_wn + k[:, None],
                mask=(cols[None, :] < N) & (k[:, None] < last),
                other=0,
            )
            acc += tl.dot(x, w.to(x.dtype), input_precision=PRECISION)
        inside = (rows[:, None] < M) & (cols[None, :] < N)
        if SPLIT_K == 1:
            scale = tl.load(scale_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
            acc = acc * scale[None, :]
            tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :],
                     acc.to(y_ptr.dtype.element_ty), mask=inside)  # fmt: skip
        else:  # a float32 partial sum per share; int8_split_sum adds them up
            part = part_ptr + tl.program_id(2) * M * N
            tl.store(part + rows[:, None] * N + cols[None, :], acc, mask=inside)

    return triton.jit(int8_linear_kernel)


@functools.cache
def _sum_kernel() -> Any:
    import triton
    import triton.language as tl

    def int8_split_sum(part_ptr, scale_ptr, y_ptr, M, N, stride_ym, SPLIT_K: tl.constexpr,
                       BLOCK: tl.constexpr):  # fmt: skip
        at = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = at < M * N
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for share in tl.static_range(SPLIT_K):
            acc += tl.load(part_ptr + share * M * N + at, mask=inside, other=0.0)
        row, col = at // N, at % N
        scale = tl.load(scale_ptr + col, mask=inside, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * stride_ym + col, (acc * scale).to(y_ptr.dtype.element_ty),
                 mask=inside)  # fmt: skip

    return triton.jit(int8_split_sum)


def tiles_for(m: int, n: int, k: int, x_bytes: int = 2) -> Tiles:
    """The best of sweeps on an H200 (benchmarks/bench_quantized.py --kernels) for Llama-8B's
    layers in bf16, by rows. Up to 16 rows: 256-wide K tiles, three or four stages deep, keep
    enough weight bytes in flight; wide N tiles where a dimension is large; a layer of at most
    64 output tiles (the 1024-wide key and value projections; the down projection, K = 14336)
    splits K in four so that its programs fill the chip. Up to 128 rows every layer but the
    widest splits K so. Prompt chunks over 128 rows take 128-row tiles. K tiles narrow until
    the stages fit in shared memory (float32 activations take twice)."""
    if m <= 16:
        block_n = 64 if max(n, k) >= 8192 else 32
        split = 4 if -(-n // block_n) <= 64 else 1
        return _fitting((16, block_n, 256, 4, 3 if n >= 8192 else 4, split), x_bytes)
    if n >= 8192 and m > 64:  # the wide gate and up projections
        tiles = (128, 128, 64, 4, 3, 1) if m > 128 else (128, 64, 64, 4, 4, 1)
    elif m <= 128:
        block_m = 32 if m <= 32 else 64
        if n <= 2048:
            tiles = (block_m, 32, 256, 4, 3, 4)
        else:
            tiles = (block_m, 64, 128, 4, 4, 4) if n <= 4096 else (block_m, 64, 128, 4, 3, 1)
    elif n <= 2048:
        tiles = (64, 64, 128, 4, 4, 1)
    elif k >= 8192:  # the down projection
        tiles = (128, 64, 128, 4, 4, 1) if m <= 256 else (128, 128, 128, 8, 3, 1)
    else:
        tiles = (128, 64, 128, 8, 4, 1) if m <= 256 else (128, 64, 64, 4, 4, 1)
    return _fitting(tiles, x_bytes)


def _fitting(tiles: Tiles, x_bytes: int) -> Tiles:
    """`tiles` with K tiles narrowed until the pipelined stages fit in STAGE_BYTES."""
    block_m, block_n, block_k, warps, stages, split = tiles
    while block_k > 32 and (block_m * x_bytes + block_n) * block_k * stages > STAGE_BYTES:
        block_k //= 2
    return block_m, block_n, block_k, warps, stages, split


def int8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                tiles: Tiles | None = None) -> torch.Tensor:  # fmt: skip
    """x [M, K] (M <= MAX_ROWS) times int8 weight [N, K]^T, scaled per output channel.

    `tiles`: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, SPLIT_K); None: tiles_for's.
    SPLIT_K > 1 splits K over that many programs per output tile (more programs than a
    narrow layer's tiles alone, for the chip's SMs), each writing a float32 partial sum that a
    second launch adds up, scales and casts."""
    m, k = x.shape
    n = weight.shape[0]
    x = x.contiguous()
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    block_m, block_n, block_k, warps, stages, split = tiles or tiles_for(m, n, k, x.element_size())
    span = -(-k // (split * block_k)) * block_k  # each share a whole number of K tiles
    split = -(-k // span)
    # the partial sums' buffer; unsplit, the kernel never touches it (out stands in)
    part = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else out
    grid = (-(-m // block_m), -(-n // block_n), split)
    _kernel()[grid](
        x, weight, scale, out, part, m, n, k, x.stride(0), weight.stride(0), out.stride(0), span,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split,
        # float32 activations multiply in full precision, as torch's matmul does by default
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32", num_warps=warps,
        num_stages=stages,
    )  # fmt: skip
    if split > 1:
        _sum_kernel()[(-(-m * n // SUM_BLOCK),)](
            part, scale, out, m, n, out.stride(0), SPLIT_K=split, BLOCK=SUM_BLOCK
        )
    return out


@functools.cache
def _widen_kernel() -> Any:
    import triton
    import triton.language as tl

    def int8_widen_kernel(w_ptr, scale_ptr, out_ptr, numel, K, BLOCK: tl.constexpr):
        at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = at < numel
        w = tl.load(w_ptr + at, mask=inside, other=0).to(tl.float32)
        scale = tl.load(scale_ptr + at // K, mask=inside, other=0.0).to(tl.float32)
        tl.store(out_ptr + at, (w * scale).to(out_ptr.dtype.element_ty), mask=inside)

    return triton.jit(int8_widen_kernel)


def int8_widen(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The int8 weight [N, K] times its per-channel scale, in `dtype`, in one pass: a prompt
    longer than MAX_ROWS runs cuBLAS on it. PyTorch's own widening (a cast, then a multiply of
    the GEMM's output) took 58 us for a 4096 x 4096 layer on an H200, where this pass moves 3
    bytes a weight."""
    out = torch.empty(weight.shape, dtype=dtype, device=weight.device)
    numel = weight.numel()
    _widen_kernel()[(-(-numel // WIDEN_BLOCK),)](
        weight, scale, out, numel, weight.shape[1], BLOCK=WIDEN_BLOCK
    )
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
