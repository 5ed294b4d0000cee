"""Fit the `multi_tensor` class (foreach and fused-optimizer kernels) to its H200 sweep.

Reads h200_multi_tensor.json (`measure_multi_tensor.py`: _foreach_mul_ / add_ / addcmul_
over 1 to 30 tensors of 4096 to 2M elements, fp32 and bf16, each one launch of 1 to 320
blocks, the profiler's kernel time). Prints each configuration's time on the shipped h200
profile against the measurement, and with --fit the least-squares fit (on log(predicted /
measured)) of the class's two numbers: memory_e_max (what 320 blocks reach) and
block_stream_gbps (what one block streams), to write into h100-sxm's [efficiency.multi_tensor]
(`kpt-sim profile derive` then gives h200 the same numbers). The optimizer steps that validate
the class are another program (predict_h200_steps.py, "Optimizer steps").

    python simulator/calibration/fit_multi_tensor.py [--fit]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from class_fit import with_efficiency
from scipy.optimize import least_squares

from kpt.sim import load_profile
from kpt.sim._cost import op_timing

SWEEP = Path(__file__).resolve().parent / "h200_multi_tensor.json"


def predicted_us(profile, row: dict) -> float:
    """One launch's device time: queued, so less the launch latency a queued kernel hides."""
    timing = op_timing(profile, "multi_tensor", float(row["tensors"] * row["numel"]),
                       float(row["bytes"]), row["dtype"], (row["blocks"],))  # fmt: skip
    return (timing.duration - profile.launch_latency_s) * 1e6


def with_class(profile, memory_e_max: float, block_stream_gbps: float):
    return with_efficiency(profile, "multi_tensor", memory_e_max=memory_e_max,
                           block_stream_rate=block_stream_gbps * 1e9)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit the class's numbers again")
    args = parser.parse_args()
    profile, rows = load_profile("h200"), json.loads(SWEEP.read_text())["kernels"]
    if args.fit:

        def residuals(x):
            fitted = with_class(profile, *x)
            return [np.log(predicted_us(fitted, r) / r["kernel_us"]) for r in rows]

        fit = least_squares(residuals, [0.9, 40.0], bounds=([0.05, 1.0], [1.0, 1000.0]))
        print("memory_e_max, block_stream_gbps:", np.round(fit.x, 4))
        profile = with_class(profile, *fit.x)
    print("| op | dtype | tensors x elements | blocks | measured us | predicted us | error |")
    print("|---|---|---|---|---|---|---|")
    errors = []
    for r in rows:
        predicted = predicted_us(profile, r)
        errors.append(predicted / r["kernel_us"] - 1)
        print(f"| {r['op']} | {r['dtype']} | {r['tensors']} x {r['numel']} | {r['blocks']} | "
              f"{r['kernel_us']:.1f} | {predicted:.1f} | {errors[-1]:+.1%} |")  # fmt: skip
    print(f"{len(rows)} kernels: median |error| {np.median(np.abs(errors)):.1%}, "
          f"p90 {np.percentile(np.abs(errors), 90):.1%}, "
          f"worst {np.max(np.abs(errors)):.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
