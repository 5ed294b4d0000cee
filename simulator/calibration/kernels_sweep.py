"""Second-round kernel sweeps: the classes the first calibration left with few held-out points.

Attention over sequence length, head dim, causal mask, dtype and batch*heads; softmax, layer
norm and RMS norm over rows x widths; convolutions (1x1, 3x3, depthwise, stems, both layouts);
reductions over the inner or the outer dim. Same record format as kernels.py; torch only.
"""

# Each lambda below is timed at once, inside its loop iteration, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import torch
import torch.nn.functional as F
from kernel_timing import DTYPES, ES, Timer, record

LIMIT_ELEMENTS = 1 << 27  # keeps every operand under 512 MB in fp32


def attention_configs(smoke: bool) -> list[tuple[int, int, int, int, bool, str]]:
    """(batch, heads, seq, head_dim, causal, dtype): two batch*heads regimes per length."""
    if smoke:
        return [(1, 2, 16, 8, False, "fp32"), (2, 2, 32, 16, True, "fp32")]
    out = []
    for hd in (64, 128):
        for seq in (128, 256, 512, 1024, 2048, 4096, 8192):
            for causal in (True, False):
                out.append((1, 8, seq, hd, causal, "bf16"))  # few CTAs: a partial wave
                out.append((max(1, 32768 // seq), 16, seq, hd, causal, "bf16"))  # many
    for seq in (256, 1024, 4096):
        for hd in (64, 128):
            out.append((max(1, 32768 // seq), 16, seq, hd, True, "fp16"))
    return out


def measure_attention_sweep(t: Timer, dev: str, smoke: bool) -> list[dict]:
    out = []
    for bsz, heads, seq, hd, causal, name in attention_configs(smoke):
        dt = DTYPES[name]
        q, k, v = (torch.randn(bsz, heads, seq, hd, device=dev, dtype=dt) for _ in range(3))
        full = 4 * bsz * heads * seq * seq * hd
        flops = full / 2 if causal else full
        nbytes = 4 * bsz * heads * seq * hd * ES[dt]
        tm = t.time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        shapes = [[bsz, heads, seq, hd]] * 3
        out.append(record("attention", "sdpa_fwd", name, shapes, flops, nbytes, tm,
                          causal=causal, sweep=2))  # fmt: skip
    return out


def row_shapes(smoke: bool) -> list[tuple[int, int]]:
    if smoke:
        return [(4, 8), (16, 50)]
    widths = (64, 128, 256, 512, 768, 1024, 2048, 4096, 8192, 16384, 32000, 50257, 131072)
    out = []
    for rows in (64, 1024, 8192, 65536):
        for cols in widths:
            if rows * cols <= LIMIT_ELEMENTS and rows * cols >= 4096:
                out.append((rows, cols))
    return out


def measure_rows(t: Timer, dev: str, smoke: bool) -> list[dict]:
    """softmax, layer norm and RMS norm over rows x widths (the normalized extent)."""
    out = []
    for name in ("fp32", "bf16"):
        dt = DTYPES[name]
        for rows, cols in row_shapes(smoke):
            x = torch.randn(rows, cols, device=dev, dtype=dt)
            w = torch.ones(cols, device=dev, dtype=dt)
            b = torch.zeros(cols, device=dev, dtype=dt)
            n = rows * cols
            es = ES[dt]
            tm = t.time(lambda: torch.softmax(x, dim=-1))
            out.append(record("softmax", "softmax", name, [[rows, cols]], 5 * n, 2 * n * es,
                              tm, numel=n, sweep=2))  # fmt: skip
            tm = t.time(lambda: F.layer_norm(x, (cols,), w, b))
            out.append(record("layernorm", "layer_norm", name, [[rows, cols]], 8 * n,
                              (2 * n + 2 * cols) * es, tm, numel=n, sweep=2))  # fmt: skip
            if hasattr(F, "rms_norm"):
                tm = t.time(lambda: F.rms_norm(x, (cols,), w))
                out.append(record("rmsnorm", "rms_norm", name, [[rows, cols]], 4 * n,
                                  (2 * n + cols) * es, tm, numel=n, sweep=2))  # fmt: skip
    return out


def conv_configs(smoke: bool) -> list[tuple[int, int, int, int, int, int, int]]:
    """(batch, in_ch, hw, out_ch, kernel, stride, groups)."""
    if smoke:
        return [(1, 3, 8, 4, 3, 1, 1), (1, 4, 8, 4, 3, 1, 4)]
    return [
        # stems: 7x7 stride 2 from RGB, a 3x3 stride 2 stem, at two batch sizes
        (8, 3, 224, 64, 7, 2, 1),
        (64, 3, 224, 64, 7, 2, 1),
        (32, 3, 224, 32, 3, 2, 1),
        (32, 3, 32, 64, 3, 1, 1),
        # 1x1 (pointwise) and 3x3 over ResNet-like stages, small and large batch
        (8, 64, 56, 64, 3, 1, 1),
        (8, 256, 56, 64, 1, 1, 1),
        (32, 256, 56, 64, 1, 1, 1),
        (32, 128, 28, 512, 1, 1, 1),
        (32, 512, 28, 128, 1, 1, 1),
        (8, 256, 14, 256, 3, 1, 1),
        (64, 256, 14, 256, 3, 1, 1),
        (32, 2048, 7, 512, 1, 1, 1),
        (32, 128, 56, 128, 3, 2, 1),
        (128, 64, 32, 64, 3, 1, 1),
        (32, 96, 56, 96, 5, 1, 1),
        # depthwise (MobileNet / ConvNeXt)
        (32, 96, 56, 96, 3, 1, 96),
        (32, 384, 14, 384, 3, 1, 384),
        (32, 128, 56, 128, 7, 1, 128),
        (8, 512, 28, 512, 7, 1, 512),
    ]


def measure_conv_sweep(t: Timer, dev: str, smoke: bool) -> list[dict]:
    out = []
    torch.backends.cudnn.benchmark = True
    for name in ("fp32", "bf16"):
        dt = DTYPES[name]
        for bsz, cin, hw, cout, ks, stride, groups in conv_configs(smoke):
            for layout in ("contiguous", "channels_last"):
                x = torch.randn(bsz, cin, hw, hw, device=dev, dtype=dt)
                w = torch.randn(cout, cin // groups, ks, ks, device=dev, dtype=dt)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                    w = w.contiguous(memory_format=torch.channels_last)
                pad = ks // 2
                ho = (hw + 2 * pad - ks) // stride + 1
                flops = 2 * bsz * cout * ho * ho * (cin // groups) * ks * ks
                nbytes = (x.numel() + w.numel() + bsz * cout * ho * ho) * ES[dt]
                tm = t.time(lambda: F.conv2d(x, w, stride=stride, padding=pad, groups=groups),
                            warmup=5)  # fmt: skip
                out.append(record("conv", "conv2d", name, [list(x.shape), list(w.shape)], flops,
                                  nbytes, tm, stride=stride, padding=pad, groups=groups,
                                  layout=layout, sweep=2))  # fmt: skip
    return out


def reduction_shapes(smoke: bool) -> list[tuple[int, int]]:
    if smoke:
        return [(4, 8), (64, 16)]
    return [(64, 1024), (1024, 64), (1024, 1024), (8192, 128), (128, 8192), (4096, 4096),
            (32768, 256), (256, 32768), (65536, 1024), (1024, 65536), (16, 1 << 22),
            (1 << 22, 16), (512, 50257), (2048, 768)]  # fmt: skip


def measure_reduction_dims(t: Timer, dev: str, smoke: bool) -> list[dict]:
    """Sums over the inner dim (row-wise, contiguous) and the outer dim (column-wise)."""
    out = []
    for name in ("fp32", "bf16"):
        dt = DTYPES[name]
        for rows, cols in reduction_shapes(smoke):
            x = torch.randn(rows, cols, device=dev, dtype=dt)
            for dim, kept in ((-1, rows), (0, cols)):
                tm = t.time(lambda: x.sum(dim=dim))
                out.append(record("reduction", "sum", name, [[rows, cols]], rows * cols,
                                  (rows * cols + kept) * ES[dt], tm, numel=rows * cols, dim=dim,
                                  sweep=2))  # fmt: skip
    return out


def measure_pageable(t: Timer, dev: str, smoke: bool) -> list[dict]:
    """Pageable host copies at more sizes: staging through pinned bounce buffers."""
    if smoke:
        sizes = [4096, 65536]
    else:
        sizes = [1 << p for p in range(12, 29)]  # 4 KB .. 256 MB, every power of two
    out = []
    for size in sizes:
        d = torch.empty(size, dtype=torch.uint8, device=dev).random_()
        host = torch.empty(size, dtype=torch.uint8).random_()
        reps = 20 if size <= (64 << 20) else 6
        for cls, fn in (("copy_h2d", lambda: d.copy_(host)), ("copy_d2h", lambda: host.copy_(d))):
            tm = t.time(fn, reps=reps, flush=False)
            out.append(record(cls, "copy", "u8", [[size]], 0, size, tm, size=size, pinned=False,
                              sweep=2))  # fmt: skip
    return out
