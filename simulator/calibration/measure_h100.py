"""Measure an NVIDIA GPU's kernel times for calibrating the kpt.sim h100-sxm profile.

One call measures everything and writes two JSON files into --out:

- h100_measurements.json: one record per kernel configuration (op class, op, dtype, shapes,
  analytic flops and bytes, median/min/p90 device seconds from CUDA events), plus launch
  overhead figures and the device description (name, driver, torch version, clocks).
- h100_host_steps.json: host-bound training steps (host_steps.py): wall, phases, kernels, aten ops.
- h100_reference_steps.json: median step time of a GPT-2-small-shaped training step and of
  the small GPT the demo trains, fp32 and bf16 autocast, AdamW, random weights.

Usage (on the device machine): python3 measure_h100.py --out "$OUT" [--budget-s 420]
Smoke test without a GPU: python3 measure_h100.py --out /tmp/x --smoke (tiny sizes, CPU timer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
from host_steps import measure_host_steps
from kernel_timing import KB, MB, Timer
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
from reference_steps import REFERENCE_MODELS, time_training_step


def sweep_main(doc: str, filename: str, sweep) -> None:
    """The command line of the one-purpose sweeps (measure_fused_sweep.py and the like):
    --out FOLDER and --smoke (tiny configurations, on a CPU); writes FOLDER/filename ("{chip}"
    in it names the GPU: h100, h200), the device's description then the fields
    sweep(smoke, device) returns."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny configurations; runs on a CPU")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    fields = {"schema": 1, "device": describe_device(dev), "torch": torch.__version__,
              **sweep(args.smoke, dev)}  # fmt: skip
    (args.out / filename.format(chip=chip())).write_text(json.dumps(fields, indent=1))
    print(f"total {time.perf_counter() - started:.1f} s")


def chip() -> str:
    """The GPU as calibration files name it: h100, h200; gpu for another, cpu for none."""
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0).lower()
    return next((c for c in ("h100", "h200") if c in name), "gpu")


def describe_host() -> dict:
    """The host CPU (model, logical cores, clock now): lent machines' hosts differ, and host
    time per launch with them, so a run names the one it had."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {"cpu": platform.processor(), "cores": os.cpu_count()}
    fields = [line.split(":", 1) for line in lines if ":" in line]
    model = next((v.strip() for k, v in fields if k.strip() == "model name"), platform.processor())
    mhz = sorted(float(v) for k, v in fields if k.strip() == "cpu MHz")
    return {"cpu": model, "cores": os.cpu_count(),
            "mhz_median": mhz[len(mhz) // 2] if mhz else None}  # fmt: skip


def describe_device(dev: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": dev,
            "host": describe_host()}  # fmt: skip
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
    host_doc = {"schema": 1, "device": meas["device"], "runs": []}

    def save():
        (args.out / "h100_measurements.json").write_text(json.dumps(meas, indent=1))
        (args.out / "h100_reference_steps.json").write_text(json.dumps(steps_doc, indent=1))
        (args.out / "h100_host_steps.json").write_text(json.dumps(host_doc, indent=1))

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

    def host_steps(t, d, smoke):
        host_doc["runs"] = measure_host_steps(d, smoke)
        return []

    sections = [
        ("reference_steps", reference_steps),
        ("host_steps", host_steps),
        # the second round's sweeps first, so a tight budget keeps them
        ("attention_sweep", measure_attention_sweep),
        ("rows_sweep", measure_rows),
        ("reduction_dims", measure_reduction_dims),
        ("conv_sweep", measure_conv_sweep),
        ("pageable", measure_pageable),
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
