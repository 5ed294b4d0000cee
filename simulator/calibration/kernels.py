"""What is measured on the GPU: each op class over many shapes, sizes and dtypes.

Every function takes the kernel Timer, the device and the smoke flag, and returns records
(kernel_timing.record) with the op class, shapes, dtype and analytic flops and bytes.
"""

# Each lambda below is timed at once, inside its loop iteration, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from kernel_timing import DTYPES, ES, KB, MB, Timer, queued_seconds_per_call, record


def measure_matmul(t: Timer, dev: str, smoke: bool) -> list[dict]:
    out = []
    squares = [64, 128] if smoke else [256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192]
    # (M, N, K): decode-like skinny products, the GPT-2 small layers at 512 tokens, tall K.
    skinny = (
        [(8, 16, 32)]
        if smoke
        else [
            (1, 4096, 4096),
            (16, 4096, 4096),
            (64, 8192, 8192),
            (128, 4096, 4096),
            (512, 2304, 768),
            (512, 768, 768),
            (512, 3072, 768),
            (512, 768, 3072),
            (512, 50257, 768),
            (512, 768, 50257),
            (768, 50257, 512),
            (512, 768, 256),
            (512, 1024, 256),
            (4096, 4096, 256),
            (1024, 1024, 16384),
            (8192, 1024, 1024),
            (1000, 1000, 1000),
            (3000, 3000, 3000),
            (4097, 4097, 4097),
        ]
    )
    shapes = [(n, n, n) for n in squares] + skinny
    for name in ["fp32", "tf32", "bf16", "fp16"]:
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        dt = DTYPES[name]
        for m, n, k in shapes:
            if name in ("fp32", "tf32") and (m, n, k) == (4097, 4097, 4097):
                continue
            a = torch.randn(m, k, device=dev, dtype=dt)
            b = torch.randn(k, n, device=dev, dtype=dt)
            tm = t.time(lambda: a @ b)
            out.append(
                record(
                    "matmul",
                    "mm",
                    name,
                    [[m, k], [k, n]],
                    2 * m * n * k,
                    (m * k + k * n + m * n) * ES[dt],
                    tm,
                    m=m,
                    n=n,
                    k=k,
                )
            )
    torch.backends.cuda.matmul.allow_tf32 = False
    # Batched products: attention-score-like and batched MLP-like.
    batched = (
        [(2, 16, 16, 16)]
        if smoke
        else [
            (48, 128, 128, 64),
            (48, 128, 64, 128),
            (96, 512, 512, 64),
            (32, 1024, 1024, 1024),
            (8, 2048, 2048, 2048),
            (256, 64, 64, 64),
        ]
    )
    for name in ["fp32", "bf16"]:
        dt = DTYPES[name]
        for bsz, m, n, k in batched:
            a = torch.randn(bsz, m, k, device=dev, dtype=dt)
            b = torch.randn(bsz, k, n, device=dev, dtype=dt)
            tm = t.time(lambda: torch.bmm(a, b))
            out.append(
                record(
                    "matmul",
                    "bmm",
                    name,
                    [[bsz, m, k], [bsz, k, n]],
                    2 * bsz * m * n * k,
                    bsz * (m * k + k * n + m * n) * ES[dt],
                    tm,
                    m=m,
                    n=n,
                    k=k,
                    batch=bsz,
                )
            )
    out += measure_fp8(t, dev, smoke)
    return out


def measure_fp8(t: Timer, dev: str, smoke: bool) -> list[dict]:
    if smoke or not dev.startswith("cuda"):
        return []
    out = []
    for n in [1024, 2048, 4096, 8192]:
        try:
            a = torch.randn(n, n, device=dev).to(torch.float8_e4m3fn)
            b = torch.randn(n, n, device=dev).to(torch.float8_e4m3fn).t()  # column-major
            one = torch.tensor(1.0, device=dev)

            def fn(a=a, b=b, one=one):
                return torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

            tm = t.time(fn)
            out.append(
                record(
                    "matmul",
                    "scaled_mm",
                    "fp8_e4m3",
                    [[n, n], [n, n]],
                    2 * n**3,
                    2 * n * n + 2 * n * n,
                    tm,
                    m=n,
                    n=n,
                    k=n,
                )
            )
        except Exception as exc:  # fp8 support depends on the build; keep the reason
            out.append(
                {
                    "op_class": "matmul",
                    "op": "scaled_mm",
                    "dtype": "fp8_e4m3",
                    "error": repr(exc)[:300],
                }
            )
            break
    return out


def sizes_bytes(smoke: bool) -> list[int]:
    if smoke:
        return [4 * KB, 64 * KB]
    return [4 * KB * 2**i for i in range(19)]  # 4 KB .. 1 GB per operand


def measure_elementwise(t: Timer, dev: str, smoke: bool) -> list[dict]:
    out = []
    ops = {
        "add": (2, lambda x, y: torch.add(x, y), 1),
        "mul": (2, lambda x, y: torch.mul(x, y), 1),
        "gelu": (1, lambda x, y: F.gelu(x), 8),  # erf-gelu: ~8 flops/element is a nominal count
    }
    for name in ["fp32", "bf16"]:
        dt = DTYPES[name]
        for size in sizes_bytes(smoke):
            numel = size // ES[dt]
            x = torch.randn(numel, device=dev, dtype=dt)
            y = torch.randn(numel, device=dev, dtype=dt)
            for op, (n_in, fn, fpe) in ops.items():
                nbytes = (n_in + 1) * numel * ES[dt]
                for flush in (True, False) if size <= 16 * MB else (True,):
                    tm = t.time(lambda fn=fn: fn(x, y), flush=flush)
                    out.append(
                        record(
                            "elementwise",
                            op,
                            name,
                            [[numel]] * n_in,
                            fpe * numel,
                            nbytes,
                            tm,
                            numel=numel,
                        )
                    )
    return out


def measure_reductions(t: Timer, dev: str, smoke: bool) -> list[dict]:
    out = []
    for name in ["fp32", "bf16"]:
        dt = DTYPES[name]
        for size in sizes_bytes(smoke):
            numel = size // ES[dt]
            x = torch.randn(numel, device=dev, dtype=dt)
            for op, fn in {"sum": torch.sum, "max": torch.amax}.items():
                tm = t.time(lambda fn=fn: fn(x))
                out.append(
                    record(
                        "reduction",
                        op,
                        name,
                        [[numel]],
                        numel,
                        numel * ES[dt] + 4,
                        tm,
                        numel=numel,
                        dim="all",
                    )
                )
        # Row-wise reductions (the shape softmax/layernorm statistics have).
        for rows, cols in (
            [(4, 8)] if smoke else [(4096, 768), (512, 50257), (65536, 1024), (16, 1 << 20)]
        ):
            x = torch.randn(rows, cols, device=dev, dtype=dt)
            tm = t.time(lambda: x.sum(dim=-1))
            out.append(
                record(
                    "reduction",
                    "sum",
                    name,
                    [[rows, cols]],
                    rows * cols,
                    (rows * cols + rows) * ES[dt],
                    tm,
                    numel=rows * cols,
                    dim=-1,
                )
            )
    return out


def measure_norms(t: Timer, dev: str, smoke: bool) -> list[dict]:
    out = []
    shapes = (
        [(4, 8)]
        if smoke
        else [
            (512, 768),
            (4096, 768),
            (512, 50257),
            (8192, 4096),
            (32768, 1024),
            (65536, 256),
            (2048, 16384),
        ]
    )
    for name in ["fp32", "bf16"]:
        dt = DTYPES[name]
        for rows, cols in shapes:
            x = torch.randn(rows, cols, device=dev, dtype=dt)
            w = torch.ones(cols, device=dev, dtype=dt)
            b = torch.zeros(cols, device=dev, dtype=dt)
            n = rows * cols
            tm = t.time(lambda: torch.softmax(x, dim=-1))
            out.append(
                record(
                    "softmax", "softmax", name, [[rows, cols]], 5 * n, 2 * n * ES[dt], tm, numel=n
                )
            )
            tm = t.time(lambda: F.layer_norm(x, (cols,), w, b))
            out.append(
                record(
                    "layernorm",
                    "layer_norm",
                    name,
                    [[rows, cols]],
                    8 * n,
                    (2 * n + 2 * cols) * ES[dt],
                    tm,
                    numel=n,
                )
            )
    return out


def measure_attention(t: Timer, dev: str, smoke: bool) -> list[dict]:
    out = []
    # (batch, heads, seq, head_dim, causal)
    configs = (
        [(1, 2, 16, 8, True)]
        if smoke
        else [
            (4, 12, 128, 64, True),
            (8, 4, 64, 64, True),
            (8, 16, 1024, 64, True),
            (4, 32, 2048, 128, True),
            (1, 32, 8192, 128, True),
            (16, 16, 512, 64, False),
            (2, 16, 4096, 64, False),
        ]
    )
    dt = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    for bsz, heads, seq, hd, causal in configs:
        q, k, v = (
            torch.randn(bsz, heads, seq, hd, device=dev, dtype=dt, requires_grad=True)
            for _ in range(3)
        )
        full = 4 * bsz * heads * seq * seq * hd
        flops = full / 2 if causal else full
        nbytes = 4 * bsz * heads * seq * hd * ES[dt]
        tm = t.time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        shapes = [[bsz, heads, seq, hd]] * 3
        out.append(
            record("attention", "sdpa_fwd", "bf16", shapes, flops, nbytes, tm, causal=causal)
        )
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        g = torch.randn_like(o)

        def fwd_bwd():
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            torch.autograd.grad(o, (q, k, v), g)

        tm = t.time(fwd_bwd)
        out.append(
            record(
                "attention",
                "sdpa_fwd_bwd",
                "bf16",
                shapes,
                3.5 * flops,
                2.5 * nbytes,
                tm,
                causal=causal,
            )
        )
    return out


def measure_conv(t: Timer, dev: str, smoke: bool) -> list[dict]:
    out = []
    # (batch, in_ch, hw, out_ch, kernel, stride): ResNet-50 stages at batch 32.
    configs = (
        [(1, 3, 8, 4, 3, 1)]
        if smoke
        else [
            (32, 3, 224, 64, 7, 2),
            (32, 64, 56, 64, 3, 1),
            (32, 64, 56, 256, 1, 1),
            (32, 128, 28, 128, 3, 1),
            (32, 256, 14, 256, 3, 1),
            (32, 512, 7, 512, 3, 1),
            (32, 1024, 14, 256, 1, 1),
        ]
    )
    torch.backends.cudnn.benchmark = True
    for name in ["fp32", "bf16"]:
        dt = DTYPES[name]
        for bsz, cin, hw, cout, ks, stride in configs:
            x = torch.randn(bsz, cin, hw, hw, device=dev, dtype=dt)
            w = torch.randn(cout, cin, ks, ks, device=dev, dtype=dt)
            if name == "bf16":
                x = x.contiguous(memory_format=torch.channels_last)
                w = w.contiguous(memory_format=torch.channels_last)
            pad = ks // 2
            ho = (hw + 2 * pad - ks) // stride + 1
            flops = 2 * bsz * cout * ho * ho * cin * ks * ks
            nbytes = (x.numel() + w.numel() + bsz * cout * ho * ho) * ES[dt]
            tm = t.time(lambda: F.conv2d(x, w, stride=stride, padding=pad), warmup=5)
            out.append(
                record(
                    "conv",
                    "conv2d",
                    name,
                    [list(x.shape), list(w.shape)],
                    flops,
                    nbytes,
                    tm,
                    stride=stride,
                    padding=pad,
                    layout="channels_last" if name == "bf16" else "contiguous",
                )
            )
    return out


def measure_copies(t: Timer, dev: str, smoke: bool) -> list[dict]:
    out = []
    sizes = [4 * KB, 64 * KB] if smoke else [4 * KB * 4**i for i in range(10)]  # 4 KB .. 1 GB
    cuda = dev.startswith("cuda")
    for size in sizes:
        d_src = torch.empty(size, dtype=torch.uint8, device=dev).random_()
        d_dst = torch.empty_like(d_src)
        tm = t.time(lambda: d_dst.copy_(d_src))
        out.append(record("copy_d2d", "copy", "u8", [[size]], 0, 2 * size, tm, size=size))
        for pinned in (True, False):
            host = torch.empty(size, dtype=torch.uint8, pin_memory=pinned and cuda).random_()
            reps = 20 if size <= 64 * MB else 6
            tm = t.time(lambda: d_dst.copy_(host, non_blocking=pinned), reps=reps, flush=False)
            out.append(
                record("copy_h2d", "copy", "u8", [[size]], 0, size, tm, size=size, pinned=pinned)
            )
            tm = t.time(lambda: host.copy_(d_src, non_blocking=pinned), reps=reps, flush=False)
            out.append(
                record("copy_d2h", "copy", "u8", [[size]], 0, size, tm, size=size, pinned=pinned)
            )
    return out


def measure_launch(t: Timer, dev: str, smoke: bool) -> dict:
    """Host time per small eager op, device time per tiny kernel, event and sync overheads."""
    x = torch.ones(1, device=dev)
    res = {}
    for name, fn in {
        "add": lambda: x + x,
        "mul_scalar": lambda: x * 2.0,
        "add_": lambda: x.add_(0.0),
    }.items():
        for _ in range(200):
            fn()
        t.sync()
        n = 200 if smoke else 5000
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        host = (time.perf_counter() - t0) / n
        t.sync()
        res[f"host_seconds_per_op_{name}"] = host
    res["device_seconds_tiny_add"] = t.time(lambda: x + x, flush=False)["seconds"]
    if dev.startswith("cuda"):
        # Back-to-back kernels with launch gaps removed: a graph of 100 tiny adds.
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                y = x + x
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            y = x
            for _ in range(100):
                y = y + x
        res["device_seconds_per_kernel_graph"] = t.time(g.replay, flush=False)["seconds"] / 100

        # Eager stream of 1000 tiny adds timed by events: the launch-bound rate.
        def burst():
            y = x
            for _ in range(1000):
                y = y + x

        res["device_seconds_per_op_eager_burst"] = (
            t.time(burst, flush=False, reps=5)["seconds"] / 1000
        )
        # Adds queued behind a long hold run back to back, each its own launch as in an eager
        # step whose host is ahead (a graph's nodes start sooner); against one held add's window
        # this splits kernel_launch_us into what a queued kernel pays and an idle GPU's latency.
        for label, size in (("tiny", 1), ("4mb", 1 << 20)):
            v = torch.ones(size, device=dev)
            queued = queued_seconds_per_call(lambda v=v: v + v, 500)
            res[f"device_seconds_per_op_queued_{label}"] = queued["seconds"]
            res[f"queued_{label}_host_past_hold"] = queued["host_past_hold"]
            res[f"device_seconds_held_{label}"] = t.time(lambda v=v: v + v, flush=False)["seconds"]
    t0 = time.perf_counter()
    for _ in range(1000):
        t.sync()
    res["host_seconds_per_idle_synchronize"] = (time.perf_counter() - t0) / 1000
    return res
