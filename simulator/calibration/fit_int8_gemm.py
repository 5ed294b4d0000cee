"""Fit the `matmul_int8w` class (kpt-serve's Triton int8 weight-only GEMM) to its H200 timings.

Reads the first run in packages/kpt-serve/benchmarks/h200_quantized_kernels.txt (from
`python benchmarks/bench_quantized.py --kernels`: Llama-8B's four layer shapes at 1, 16 and
256 rows, each call timed inside a CUDA graph, so a kernel costs its time less the launch
latency a queued kernel hides): for each layer, the time of the tiles the engine runs
(`kpt.serve._triton_quant.tiles_for`), for the batches it runs them (up to MAX_ROWS). Prints
each layer's time on the shipped h200 profile against the measurement, and with --fit the
least-squares fit (on log(predicted / measured)) of the class's five numbers, starting from
the matmul class, to paste into the profiles (h100-sxm's memory_x_half is the fit's times
3350 / 4800, which `kpt-sim profile derive` scales back).

    python simulator/calibration/fit_int8_gemm.py [--fit]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from class_fit import with_efficiency
from scipy.optimize import least_squares

from kpt.serve._triton_quant import MAX_ROWS, tiles_for
from kpt.sim import load_profile
from kpt.sim._cost import op_timing

KERNELS = (Path(__file__).resolve().parents[2]
           / "packages/kpt-serve/benchmarks/h200_quantized_kernels.txt")  # fmt: skip
# A layer's line, then the engine's tiles on the next.
ENGINE = re.compile(r"^(\d+) x (\d+), rows (\d+):.*?int8 engine tiles ([\d.]+) us.*\n"
                    r"    engine tiles: \(([\d, ]+)\)", re.M)  # fmt: skip


def measured() -> list[tuple[int, int, int, float]]:
    """(N, K, rows, microseconds of the engine's tiles) of the file's first run, for the
    batches the kernel takes (up to MAX_ROWS)."""
    first = KERNELS.read_text().split("\n# ", 1)[0]
    layers = []
    for n, k, rows, us, tiles in ENGINE.findall(first):
        n, k, rows = int(n), int(k), int(rows)
        if rows > MAX_ROWS:
            continue
        if tuple(int(t) for t in tiles.split(",")) != tiles_for(rows, n, k):
            raise SystemExit(f"{n} x {k}, rows {rows}: timed with tiles ({tiles}), the engine "
                             f"now runs {tiles_for(rows, n, k)}; sweep again")  # fmt: skip
        layers.append((n, k, rows, float(us)))
    return layers


def predicted_us(profile, n: int, k: int, rows: int) -> float:
    """bf16 activations, int8 weights, a bf16 output; queued (in a graph): no launch latency."""
    nbytes = 2 * rows * k + n * k + 2 * rows * n
    timing = op_timing(profile, "matmul_int8w", 2.0 * rows * n * k, nbytes, "bf16", (rows, n, k))
    return (timing.duration - profile.launch_latency_s) * 1e6


def with_class(profile, x):
    """The profile with matmul_int8w set to x = (memory e_max, memory x_half MB, compute e_max,
    compute x_half GFLOP, fixed us)."""
    memory_e, memory_half, compute_e, compute_half, fixed = x
    return with_efficiency(
        profile, "matmul_int8w", memory_e_max=memory_e, memory_x_half=memory_half * 1e6,
        compute_e_max=compute_e, compute_x_half=compute_half * 1e9,
        fixed_s={"bf16": fixed * 1e-6, "fp16": fixed * 1e-6},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit the class's numbers again")
    args = parser.parse_args()
    profile, layers = load_profile("h200"), measured()
    if args.fit:

        def residuals(x):
            fitted = with_class(profile, x)
            return [np.log(predicted_us(fitted, n, k, r) / us) for n, k, r, us in layers]

        bounds = ([0.05, 0, 0.01, 0.001, 0], [1.0, 100, 1.0, 100, 20])
        fit = least_squares(residuals, [0.7, 4.0, 0.3, 1.0, 1.0], bounds=bounds)
        print("memory_e_max, memory_x_half MB, compute_e_max, compute_x_half GFLOP, fixed us:",
              np.round(fit.x, 4))  # fmt: skip
        profile = with_class(profile, fit.x)
    print("| N x K | rows | measured us | predicted us | error |")
    print("|---|---|---|---|---|")
    errors = []
    for n, k, rows, us in layers:
        predicted = predicted_us(profile, n, k, rows)
        errors.append(predicted / us - 1)
        print(f"| {n} x {k} | {rows} | {us:.1f} | {predicted:.1f} | {errors[-1]:+.1%} |")
    print(
        f"{len(layers)} layers: median |error| {np.median(np.abs(errors)):.1%}, "
        f"worst {np.max(np.abs(errors)):.1%}"
    )


if __name__ == "__main__":
    main()
