"""Fit the matmul class's skinny regime (decode-time GEMMs: gemv, split-K) to the H200's sweep.

Reads h200_skinny_gemm.json (measure_skinny_gemm.py: F.linear over Llama-8B's and GPT-2's
weights at 1 to 256 rows, each the profiler's kernel time with L2 flushed) and fits, by least
squares on log(predicted / measured), the regime's memory curve (skinny_memory_e_max,
skinny_memory_x_half) for each row threshold (skinny_rows), keeping the best. Held out: the bf16
layers of packages/kpt-serve/benchmarks/h200_quantized_kernels.txt (Llama-8B's four layer
shapes at 1 to 512 rows, each call timed inside a CUDA graph by another script, weights
rotated so that L2 holds none). Prints both against the shipped h200 profile and the fit;
h100-sxm's skinny_memory_x_half is the fit's times 3350 / 4800, which `kpt-sim profile derive`
scales back. Then, misaligned rows at <= 4 rows (GPT-2's 50257-wide head in decode), which
cuBLAS runs as gemv and small-N kernels: misaligned_gemv_factor, the share of the skinny
curve's bandwidth their scalar loads reach, fitted on the sweep's three such GEMMs.

    python simulator/calibration/fit_skinny_gemm.py [--fit]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from class_fit import with_efficiency
from scipy.optimize import least_squares
from validate_gemm_sweeps import kernel_s

from kpt.sim import load_profile
from kpt.sim._cost import GEMV_ROWS, misaligned

HERE = Path(__file__).parent
SWEEP = HERE / "h200_skinny_gemm.json"
HELD_OUT = HERE.parents[1] / "packages/kpt-serve/benchmarks/h200_quantized_kernels.txt"
LAYER = re.compile(r"^(\d+) x (\d+), rows (\d+): bf16 ([\d.]+) us", re.M)
ROW_THRESHOLDS = (16, 32, 64, 128, 256)


def sweep() -> list[dict]:
    """The sweep's GEMMs with 16-byte rows (GPT-2's 50257-wide head runs misaligned kernels,
    which the misaligned rates price)."""
    rows = json.loads(SWEEP.read_text())["gemms"]
    return [r for r in rows if not misaligned("bf16", (r["m"], r["n"], r["k"]))]


def misaligned_gemv() -> list[dict]:
    """The sweep's misaligned GEMMs of at most GEMV_ROWS rows (GPT-2's head in decode): cuBLAS
    runs gemv and small-N kernels for them, not the align-1 tiles."""
    rows = json.loads(SWEEP.read_text())["gemms"]
    return [r for r in rows if misaligned("bf16", (r["m"], r["n"], r["k"]))
            and min(r["m"], r["n"]) <= GEMV_ROWS]  # fmt: skip


def fit_gemv_factor(profile, data: list[dict]) -> float:
    """misaligned_gemv_factor by least squares on log(predicted / measured)."""

    def residuals(x):
        fitted = with_efficiency(profile, "matmul", misaligned_gemv_factor=float(x[0]))
        return [np.log(predicted_us(fitted, r) / r["device_us"]) for r in data]

    return float(least_squares(residuals, [0.5], bounds=([0.05], [1.0])).x[0])


def held_out() -> list[dict]:
    """The first run's bf16 layers: (N, K, rows) and microseconds inside a CUDA graph."""
    first = HELD_OUT.read_text().split("\n# ", 1)[0]
    return [{"n": int(n), "k": int(k), "m": int(m), "flops": 2.0 * int(m) * int(n) * int(k),
             "device_us": float(us)} for n, k, m, us in LAYER.findall(first)]  # fmt: skip


def predicted_us(profile, row: dict) -> float:
    return kernel_s(profile, row, (row["m"], row["n"], row["k"])) * 1e6


def with_regime(profile, rows: int, e_max: float, x_half_mb: float):
    return with_efficiency(
        profile, "matmul", skinny_rows=rows, skinny_memory_e_max=e_max,
        skinny_memory_x_half=x_half_mb * 1e6,
    )  # fmt: skip


def fit(profile, data: list[dict]):
    """(cost, rows, e_max, x_half MB) of the best threshold."""
    best = None
    for rows in ROW_THRESHOLDS:

        def residuals(x, rows=rows):
            fitted = with_regime(profile, rows, *x)
            return [np.log(predicted_us(fitted, r) / r["device_us"]) for r in data]

        out = least_squares(residuals, [0.8, 5.0], bounds=([0.05, 0.0], [1.0, 200.0]),
                            loss="soft_l1", f_scale=0.1)  # fmt: skip
        if best is None or out.cost < best[0]:
            best = (out.cost, rows, *out.x)
    return best


def errors(profile, data: list[dict]) -> list[float]:
    return [predicted_us(profile, r) / r["device_us"] - 1 for r in data]


def line(name: str, errs: list[float]) -> str:
    a = np.abs(errs)
    return (f"{name}: median |error| {np.median(a):.1%}, p90 {np.percentile(a, 90):.1%}, "
            f"worst {a.max():.1%}, median signed {np.median(errs):+.1%} over {len(a)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit the regime's numbers again")
    args = parser.parse_args()
    profile, data, other = load_profile("h200"), sweep(), held_out()
    print(line("sweep, shipped h200", errors(profile, data)))
    print(line("held out, shipped h200", errors(profile, other)))
    if args.fit:
        off = with_efficiency(profile, "matmul", skinny_rows=0)
        print(line("sweep, no skinny regime", errors(off, data)))
        print(line("held out, no skinny regime", errors(off, other)))
        _, rows, e_max, x_half = fit(off, data)
        print(f"skinny_rows = {rows}, skinny_memory_e_max = {e_max:.4f}, "
              f"skinny_memory_x_half = {x_half * 1e6:.6g} (h200; h100-sxm: "
              f"{x_half * 1e6 * 3350 / 4800:.6g})")  # fmt: skip
        fitted = with_regime(off, rows, e_max, x_half)
        print(line("sweep, fitted", errors(fitted, data)))
        print(line("held out, fitted", errors(fitted, other)))
    gemv = misaligned_gemv()
    print(line("misaligned gemv (GPT-2's head, 1-4 rows), shipped h200", errors(profile, gemv)))
    if args.fit:
        tiles = with_efficiency(profile, "matmul", misaligned_gemv_factor=0.0)
        print(line("misaligned gemv, priced as align-1 tiles", errors(tiles, gemv)))
        factor = fit_gemv_factor(profile, gemv)
        print(f"misaligned_gemv_factor = {factor:.4g}")
        fitted = with_efficiency(profile, "matmul", misaligned_gemv_factor=factor)
        print(line("misaligned gemv, fitted", errors(fitted, gemv)))


if __name__ == "__main__":
    main()
