"""Measure an NVIDIA GPU's kernel times for calibrating the kpt.sim h100-sxm profile.

One call measures everything and writes two JSON files into --out:

- h100_measurements.json: one record per kernel configuration (op class, op, dtype, shapes,
  analytic flops and bytes, median/min/p90 device seconds from CUDA events), plus launch
  overhead figures and the device description (name, driver, torch version, clocks).
- h100_reference_steps.json: median step time of a GPT-2-small-shaped training step and of
  the small GPT the demo trains, fp32 and bf16 autocast, AdamW, random weights.

Usage (on the device machine): python3 measure_h100.py --out "$OUT" [--budget-s 420]
Smoke test without a GPU: python3 measure_h100.py --out /tmp/x --smoke (tiny sizes, CPU timer).
"""

# Each lambda below is timed at once, inside its loop iteration, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30
ES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.float8_e4m3fn: 1}
DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


class Timer:
    """Times a callable on the device: warm-up, optional L2 flush before each rep, median."""

    def __init__(self, device: str, flush_bytes: int) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        # Writing a buffer larger than L2 (50 MB on H100) evicts the operands of the last rep.
        self.flush_buf = torch.empty(flush_bytes // 4, dtype=torch.float32, device=device)

    def flush(self) -> None:
        self.flush_buf.zero_()

    def time(self, fn, reps: int = 20, warmup: int = 3, flush: bool = True) -> dict:
        for _ in range(warmup):
            fn()
        self.sync()
        # Fewer reps for long kernels: aim for about 0.3 s per configuration.
        t0 = time.perf_counter()
        fn()
        self.sync()
        one = time.perf_counter() - t0
        reps = max(5, min(reps, int(0.3 / max(one, 1e-6))))
        samples = []
        for _ in range(reps):
            if flush:
                self.flush()
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
        samples.sort()
        return {
            "seconds": statistics.median(samples),
            "seconds_min": samples[0],
            "seconds_p90": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
            "reps": reps,
            "l2_flushed": flush,
        }

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def record(op_class, op, dtype, shapes, flops, nbytes, timing, **extra) -> dict:
    return {
        "op_class": op_class,
        "op": op,
        "dtype": dtype,
        "shapes": shapes,
        "flops": float(flops),
        "bytes": float(nbytes),
        **timing,
        **extra,
    }


# ---------------------------------------------------------------- kernels


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
    t0 = time.perf_counter()
    for _ in range(1000):
        t.sync()
    res["host_seconds_per_idle_synchronize"] = (time.perf_counter() - t0) / 1000
    return res


# ---------------------------------------------------------------- reference steps


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x):
        b, s, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, w // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, w))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """GPT-2 layout: learned positions, pre-norm blocks, tied input/output embedding."""

    def __init__(self, layers: int, width: int, heads: int, vocab: int, context: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.ln_f(x) @ self.tok.weight.t()


def time_training_step(dev: str, cfg: dict, precision: str, steps: int) -> dict:
    torch.manual_seed(0)
    model = GPT(cfg["layers"], cfg["width"], cfg["heads"], cfg["vocab"], cfg["context"]).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idx = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["context"]), device=dev)
    tgt = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["context"]), device=dev)
    cuda = dev.startswith("cuda")

    def step():
        with torch.autocast(
            "cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=precision == "bf16_autocast"
        ):
            logits = model(idx)
            loss = F.cross_entropy(logits.float().view(-1, cfg["vocab"]), tgt.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(5):
        step()
    samples = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - t0)
    kernels = None
    if cuda:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        evs = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
        kernels = {
            "count": int(sum(e.count for e in evs)),
            "device_seconds": sum(e.self_device_time_total for e in evs) / 1e6,
        }
    samples.sort()
    params = sum(p.numel() for p in model.parameters())
    tokens = cfg["batch"] * cfg["context"]
    return {
        "precision": precision,
        "step_ms_median": 1e3 * statistics.median(samples),
        "step_ms_min": 1e3 * samples[0],
        "step_ms_p90": 1e3 * samples[int(0.9 * len(samples))],
        "steps_timed": steps,
        "params": params,
        "model_flops_per_step": 6 * params * tokens,
        "kernels_per_step": kernels,
    }


REFERENCE_MODELS = {
    "gpt2_small": {
        "layers": 12,
        "width": 768,
        "heads": 12,
        "vocab": 50257,
        "context": 128,
        "batch": 4,
    },
    "demo_gpt": {"layers": 4, "width": 256, "heads": 4, "vocab": 512, "context": 64, "batch": 8},
}


# ---------------------------------------------------------------- driver


def describe_device(dev: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": dev}
    if dev.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update(
            name=p.name,
            sm_count=p.multi_processor_count,
            memory_total=p.total_memory,
            capability=f"{p.major}.{p.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            l2_bytes=getattr(p, "L2_cache_size", None),
        )
        q = (
            "driver_version,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit,"
            "temperature.gpu,pstate"
        )
        try:
            info["nvidia_smi"] = dict(
                zip(
                    q.split(","),
                    subprocess.run(
                        ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                        capture_output=True,
                        text=True,
                        timeout=20,
                    )
                    .stdout.strip()
                    .split(", "),
                )
            )
        except Exception as exc:
            info["nvidia_smi"] = repr(exc)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; runs on CPU")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip sections past this")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    meas = {
        "schema": 1,
        "device": describe_device(dev),
        "records": [],
        "launch": {},
        "sections": {},
    }
    steps_doc = {"schema": 1, "device": meas["device"], "models": {}}

    def save():
        (args.out / "h100_measurements.json").write_text(json.dumps(meas, indent=1))
        (args.out / "h100_reference_steps.json").write_text(json.dumps(steps_doc, indent=1))

    timer = Timer(dev, 4 * KB if args.smoke else 256 * MB)

    def reference_steps(t, d, smoke):
        for name, cfg in REFERENCE_MODELS.items():
            if smoke:
                cfg = {**cfg, "layers": 1, "width": 32, "heads": 2, "vocab": 64, "context": 8}
            steps_doc["models"][name] = {
                "config": cfg,
                "optimizer": "AdamW",
                "runs": [
                    time_training_step(d, cfg, p, 3 if smoke else 20)
                    for p in ("fp32", "bf16_autocast")
                ],
            }
            print(
                name,
                [
                    (r["precision"], round(r["step_ms_median"], 3))
                    for r in steps_doc["models"][name]["runs"]
                ],
                flush=True,
            )
        return []

    sections = [
        ("reference_steps", reference_steps),
        ("matmul", measure_matmul),
        ("launch", None),
        ("elementwise", measure_elementwise),
        ("reductions", measure_reductions),
        ("norms", measure_norms),
        ("attention", measure_attention),
        ("copies", measure_copies),
        ("conv", measure_conv),
    ]
    for name, fn in sections:
        elapsed = time.perf_counter() - started
        if elapsed > args.budget_s:
            meas["sections"][name] = "skipped: over budget"
            continue
        t0 = time.perf_counter()
        try:
            if fn is None:
                meas["launch"] = measure_launch(timer, dev, args.smoke)
            else:
                meas["records"] += fn(timer, dev, args.smoke)
            meas["sections"][name] = f"ok in {time.perf_counter() - t0:.1f} s"
        except Exception as exc:  # keep what the other sections measured
            meas["sections"][name] = f"failed: {exc!r}"[:500]
        print(f"{name}: {meas['sections'][name]}", flush=True)
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
        save()
    meas["device"]["nvidia_smi_after"] = describe_device(dev).get("nvidia_smi")
    meas["wall_seconds"] = time.perf_counter() - started
    save()
    summarize(meas)


def summarize(meas: dict) -> None:
    """A short table of headline rates (the reply carries only the end of the output)."""
    recs = [r for r in meas["records"] if "seconds" in r]

    def best(pred, key):
        sel = [r for r in recs if pred(r)]
        return max(sel, key=key) if sel else None

    for label, pred, rate in [
        (
            "mm bf16 TFLOP/s",
            lambda r: r["op"] == "mm" and r["dtype"] == "bf16",
            lambda r: r["flops"] / r["seconds"] / 1e12,
        ),
        (
            "mm fp8 TFLOP/s",
            lambda r: r["op"] == "scaled_mm",
            lambda r: r["flops"] / r["seconds"] / 1e12,
        ),
        (
            "mm tf32 TFLOP/s",
            lambda r: r["op"] == "mm" and r["dtype"] == "tf32",
            lambda r: r["flops"] / r["seconds"] / 1e12,
        ),
        (
            "mm fp32 TFLOP/s",
            lambda r: r["op"] == "mm" and r["dtype"] == "fp32",
            lambda r: r["flops"] / r["seconds"] / 1e12,
        ),
        (
            "d2d GB/s",
            lambda r: r["op_class"] == "copy_d2d",
            lambda r: r["bytes"] / r["seconds"] / 1e9,
        ),
        ("add GB/s", lambda r: r["op"] == "add", lambda r: r["bytes"] / r["seconds"] / 1e9),
        (
            "h2d pinned GB/s",
            lambda r: r["op_class"] == "copy_h2d" and r["pinned"],
            lambda r: r["bytes"] / r["seconds"] / 1e9,
        ),
        (
            "d2h pinned GB/s",
            lambda r: r["op_class"] == "copy_d2h" and r["pinned"],
            lambda r: r["bytes"] / r["seconds"] / 1e9,
        ),
    ]:
        r = best(pred, rate)
        if r:
            print(f"{label:18s} {rate(r):10.1f}  at {r['shapes']}")
    print(
        f"records: {len(recs)}; launch: "
        + ", ".join(f"{k}={v * 1e6:.2f}us" for k, v in meas["launch"].items())
    )
    print("sections:", meas["sections"], "wall", round(meas.get("wall_seconds", 0), 1))


if __name__ == "__main__":
    main()
