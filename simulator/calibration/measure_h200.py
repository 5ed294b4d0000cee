"""Measure a real H200 through the public torch API, to validate the derived `h200` profile.

The profile was derived from the h100-sxm calibration and the H200's datasheet
(`kpt-sim profile derive`); nothing here is fitted. One call times, with CUDA events, 3
warm-ups, the median of up to 20 repeats and a 256 MB L2 flush before each timed kernel
(kernel_timing.py), the same kernel catalogue as the H100 runs (kernels.py, kernels_sweep.py:
matmul, elementwise, reductions, norms, softmax, attention via F.scaled_dot_product_attention,
conv, copies) plus small ops (tiny kernels of every class, device time and host time per
eager call) and the reference training steps, then writes into --out:

- h200_measurements.json: one record per kernel in the H100 files' format (fit.py reads it);
- h200_reference_steps.json: GPT-2-small-shaped and demo GPT training steps (wall, AdamW).

Usage (on the device machine): python3 measure_h200.py --out "$OUT" [--budget-s 380]
Smoke test without a GPU: python3 measure_h200.py --out /tmp/x --smoke
Compare afterwards (here, no GPU): python validate_h200.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from kernel_timing import DTYPES, ES, KB, MB, Timer, record
from kernels import (
    measure_attention,
    measure_conv,
    measure_copies,
    measure_elementwise,
    measure_launch,
    measure_matmul,
    measure_norms,
    measure_reductions,
)
from kernels_sweep import (
    measure_attention_sweep,
    measure_conv_sweep,
    measure_pageable,
    measure_reduction_dims,
    measure_rows,
)
from measure_h100 import describe_device, summarize
from reference_steps import REFERENCE_MODELS, time_training_step

HOST_LOOP = 2000  # eager calls per host-time figure


def small_op_catalogue(dev: str):
    """(op_class, op, dtype, shapes, flops, bytes, fn, extra) for tiny kernels of each class."""
    out = []
    for name in ("fp32", "bf16"):
        dt = DTYPES[name]
        es = ES[dt]
        v = torch.randn(1024, device=dev, dtype=dt)
        m = torch.randn(64, 64, device=dev, dtype=dt)
        rows = torch.randn(32, 256, device=dev, dtype=dt)
        w = torch.ones(256, device=dev, dtype=dt)
        out += [
            ("elementwise", "add", name, [[1024]] * 2, 1024, 3 * 1024 * es,
             lambda v=v: v + v, {"numel": 1024}),
            ("elementwise", "relu", name, [[1024]], 1024, 2 * 1024 * es,
             lambda v=v: torch.relu(v), {"numel": 1024}),
            ("reduction", "sum", name, [[1024]], 1024, 1024 * es + 4,
             lambda v=v: v.sum(), {"numel": 1024, "dim": "all"}),
            ("reduction", "sum", name, [[32, 256]], 32 * 256, (32 * 256 + 32) * es,
             lambda r=rows: r.sum(dim=-1), {"numel": 32 * 256, "dim": -1}),
            ("softmax", "softmax", name, [[32, 256]], 5 * 32 * 256, 2 * 32 * 256 * es,
             lambda r=rows: F.softmax(r, dim=-1), {}),
            ("layernorm", "layer_norm", name, [[32, 256]], 8 * 32 * 256, 2 * 32 * 256 * es,
             lambda r=rows, w=w: F.layer_norm(r, (256,), w, w), {}),
            ("matmul", "mm", name, [[64, 64], [64, 64]], 2 * 64**3, 3 * 64 * 64 * es,
             lambda m=m: m @ m, {"m": 64, "n": 64, "k": 64}),
        ]  # fmt: skip
    return out


def measure_small_ops(t: Timer, dev: str, smoke: bool) -> list[dict]:
    """Tiny kernels: device time (flushed, so the GPU is busy while the host enqueues) and
    host seconds per eager call in a loop (what an isolated small op costs the host)."""
    out = []
    for cls, op, dtype, shapes, flops, nbytes, fn, extra in small_op_catalogue(dev):
        tm = t.time(fn)
        for _ in range(50):
            fn()
        t.sync()
        n = 100 if smoke else HOST_LOOP
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        host = (time.perf_counter() - t0) / n
        t.sync()
        out.append(record(cls, op, dtype, shapes, flops, nbytes, tm, small_op=True,
                          host_seconds_per_call=host, **extra))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; runs on CPU")
    ap.add_argument("--budget-s", type=float, default=380.0, help="skip sections past this")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    device = describe_device(dev)
    if dev == "cuda":
        device["memory_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
        device["sm_count"] = torch.cuda.get_device_properties(0).multi_processor_count
    meas = {"schema": 1, "device": device, "records": [], "launch": {}, "sections": {}}
    steps_doc = {"schema": 1, "device": device, "models": {}}

    def save():
        (args.out / "h200_measurements.json").write_text(json.dumps(meas, indent=1))
        (args.out / "h200_reference_steps.json").write_text(json.dumps(steps_doc, indent=1))

    timer = Timer(dev, 4 * KB if args.smoke else 256 * MB)

    def reference_steps(t, d, smoke):
        for name, cfg in REFERENCE_MODELS.items():
            if smoke:
                cfg = {**cfg, "layers": 1, "width": 32, "heads": 2, "vocab": 64, "context": 8}
            steps_doc["models"][name] = {
                "config": cfg,
                "optimizer": "AdamW",
                "runs": [time_training_step(d, cfg, p, 3 if smoke else 20)
                         for p in ("fp32", "bf16_autocast")],
            }  # fmt: skip
        return []

    # Cheap, high-value sections first, so a tight budget drops only the long sweeps' tail.
    sections = [
        ("matmul", measure_matmul),
        ("launch", None),
        ("small_ops", measure_small_ops),
        ("elementwise", measure_elementwise),
        ("reductions", measure_reductions),
        ("norms", measure_norms),
        ("attention", measure_attention),
        ("copies", measure_copies),
        ("conv", measure_conv),
        ("reference_steps", reference_steps),
        ("attention_sweep", measure_attention_sweep),
        ("rows_sweep", measure_rows),
        ("reduction_dims", measure_reduction_dims),
        ("conv_sweep", measure_conv_sweep),
        ("pageable", measure_pageable),
    ]
    for name, fn in sections:
        if time.perf_counter() - started > args.budget_s:
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
    meas["wall_seconds"] = time.perf_counter() - started
    save()
    summarize(meas)


if __name__ == "__main__":
    main()
