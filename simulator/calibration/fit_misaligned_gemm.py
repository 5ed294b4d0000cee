"""Fit the matmul class's fallback-kernel rates (rows that are not 16-byte aligned) to the
H200's sweeps.

Fitted, by least squares on log(predicted / measured): misaligned_tflops (rows of an odd
number of elements: cuBLAS's SM75 align-1 kernels), misaligned_output_tflops (the same when
the odd row is the output's), align2_tflops (rows of 2 or 4 elements' alignment: SM80 align-2/4
kernels), and over a grid the output tile those kernels pad M and N to (misaligned_tile). The
data: h200_misaligned_gemm.json (285 GEMMs, three forms, 256-4096 rows), the misaligned GEMMs
of h200_skinny_gemm.json from 8 rows up (GPT-2's head: few rows pay a whole tile; at 1-4 rows
cuBLAS runs a gemv, which the model leaves out), and the H100's 11 misaligned kernels
(h100_dataset.json), each chip weighing the same. Held out: the vocabulary-head GEMMs of the
H200's whole steps (predict_h200_steps.vocab_heads, simulator/REPORT.md's table). The rates
are compute rates: h100-sxm and the derived h200 share them.

    python simulator/calibration/fit_misaligned_gemm.py [--fit]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from class_fit import with_efficiency
from fit_dataset import predict
from predict_h200_steps import vocab_heads
from scipy.optimize import least_squares
from validate_gemm_sweeps import FORMS, kernel_s

from kpt.sim import load_profile
from kpt.sim._cost import misaligned

HERE = Path(__file__).parent
TILES = (32, 64, 128, 256)
TERA = 1e12


def fit_rows() -> list[dict]:
    """Each GEMM with the shape kpt_sim's executor gives it and its measured microseconds."""
    rows = []
    for r in json.loads((HERE / "h200_misaligned_gemm.json").read_text())["gemms"]:
        rows.append({**r, "shape": FORMS[r["form"]](r["m"], r["n"], r["k"])})
    for r in json.loads((HERE / "h200_skinny_gemm.json").read_text())["gemms"]:
        shape = (r["m"], r["n"], r["k"])
        if r["m"] >= 8 and misaligned("bf16", shape):
            rows.append({**r, "shape": shape})
    return rows


def predicted_us(profile, row: dict) -> float:
    return kernel_s(profile, row, row["shape"]) * 1e6


def with_rates(profile, tile: int, slow: float, output: float, align2: float):
    return with_efficiency(
        profile, "matmul", misaligned_tile=tile, misaligned_flops=slow * TERA,
        misaligned_output_flops=output * TERA, align2_flops=align2 * TERA,
    )  # fmt: skip


def h100_items() -> list[dict]:
    data = json.loads((HERE / "h100_dataset.json").read_text())
    return [i for part in ("fit", "validation") for i in data[part]
            if i["report_class"] == "matmul_misaligned"]  # fmt: skip


def fit(h200, h100, rows: list[dict]) -> tuple[int, float, float, float]:
    """The H200's sweeps and the H100's misaligned kernels, each chip weighing the same: the
    two disagree on the output's odd row (the H100 ran it 1.2x faster at the same shapes)."""
    best, theirs = None, h100_items()
    weight = np.sqrt(len(rows) / len(theirs))
    for tile in TILES:

        def residuals(x, tile=tile):
            on_h200, on_h100 = (with_rates(p, tile, *np.exp(x)) for p in (h200, h100))
            ours = [np.log(predicted_us(on_h200, r) / r["device_us"]) for r in rows]
            return ours + [weight * np.log(predict(on_h100, i) / i["measured_s"]) for i in theirs]

        out = least_squares(residuals, np.log([150.0, 110.0, 300.0]), loss="soft_l1",
                            f_scale=0.1)  # fmt: skip
        if best is None or out.cost < best[0]:
            best = (out.cost, tile, *np.exp(out.x))
    return best[1:]


def line(name: str, errs: list[float]) -> str:
    a = np.abs(errs)
    return (f"{name}: median |error| {np.median(a):.1%}, p90 {np.percentile(a, 90):.1%}, "
            f"worst {a.max():.1%} over {len(a)}")  # fmt: skip


def report(h200, h100, rows: list[dict], label: str) -> None:
    print(line(f"sweeps, {label}", [predicted_us(h200, r) / r["device_us"] - 1 for r in rows]))
    heads = vocab_heads(h200)
    print(line(f"held out: whole steps' heads, {label}",
               [h["predicted_s"] / h["measured_s"] - 1 for h in heads]))  # fmt: skip
    print(line(f"H100 misaligned kernels, {label}",
               [predict(h100, i) / i["measured_s"] - 1 for i in h100_items()]))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit the rates again")
    args = parser.parse_args()
    h200, h100, rows = load_profile("h200"), load_profile("h100-sxm"), fit_rows()
    report(h200, h100, rows, "shipped")
    if args.fit:
        tile, slow, output, align2 = fit(h200, h100, rows)
        print(f"misaligned_tflops = {slow:.1f}, misaligned_output_tflops = {output:.1f}, "
              f"align2_tflops = {align2:.1f}, misaligned_tile = {tile}")  # fmt: skip
        report(with_rates(h200, tile, slow, output, align2),
               with_rates(h100, tile, slow, output, align2), rows, "fitted")  # fmt: skip


if __name__ == "__main__":
    main()
