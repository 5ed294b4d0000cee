"""Price the row sweep (measure_row_sweep.py: reductions and softmax at shapes the catalogue
never ran) with a shipped profile and write its section of REPORT.md.

The reductions are held out: the reduction launch model (kpt.sim._reduce_plan) was fitted on
the H100 catalogue's reductions (fit.py --only reduction). Each case becomes the cost model's
inputs as kpt-adapter-sim's estimator builds them: (outputs, reduced extent, contiguous), the
bytes read and written, the elements as FLOPs (softmax: 5 per element, as the catalogue).

Two softmax terms are fitted here, on this sweep's softmax rows alone (--fit, SWEEP_TERMS):
the short-row rate (`[efficiency.softmax] short_row_tflops`: rows of at most 1024 elements,
torch's warp kernel at <= 32 elements per lane) and fp32's own per-row rate of the warp kernel
(`[efficiency.softmax.fp32] warp_row_gbps`); the catalogues' softmax kernels, H100 and H200,
hold them out.

Usage: python validate_row_sweep.py [--dry-run] [--fit]   (needs kpt.sim, numpy and scipy)
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
from fit_dataset import SUMMING, predict
from report_sections import publish
from scipy.optimize import minimize_scalar

from kpt.sim import load_profile, profile_from_dict
from kpt.sim._cost import (
    SHORT_ROW_ELEMENTS,
    WARP_ROW_ELEMENTS,
    block_softmax_kernel,
    warp_per_row,
)

HERE = Path(__file__).parent
PROFILE_PATH = HERE.parent / "src/kpt/sim/profiles/h100-sxm.toml"
SWEEPS = {
    "h100-sxm": "h100_row_sweep.json",
    "h200": "h200_row_sweep.json",
}  # profile: its chip's run
HEADING = "## Row sweep (reductions and softmax at shapes the catalogue never ran)"
BYTES = {"fp32": 4, "bf16": 2}
SOFTMAX_FLOPS = 5  # per element, the catalogue's count (measure_h100.py)


def reduction_shape(shape: list[int], dims: list[int] | None, op: str) -> list[int]:
    """(outputs, extent, contiguous, summing) of a reduction `op` over `dims` of a contiguous
    tensor."""
    numel = math.prod(shape)
    summing = int(op in SUMMING)
    if dims is None:
        return [1, numel, 1, summing]
    extent = math.prod(shape[d] for d in dims)
    kept = [d for d in range(len(shape)) if d not in dims and shape[d] > 1]
    contiguous = not kept or min(dims) > max(kept)  # every reduced dim inside every kept one
    return [numel // extent, extent, int(contiguous), summing]


def model_inputs(case: dict) -> dict:
    size = BYTES[case["dtype"]]
    numel = math.prod(case["shape"])
    label = f"{case['op']} {case['dtype']} {case['shape']}" + (
        f" dims={case['dims']}" if case["kind"] == "reduction" and case["dims"] else ""
    )
    if case["kind"] == "softmax":
        shape, flops, nbytes = case["shape"], SOFTMAX_FLOPS * numel, 2 * size * numel
    else:
        shape = reduction_shape(case["shape"], case["dims"], case["op"])
        flops, nbytes = numel, size * (numel + shape[0])
    return {"label": label, "kind": "op", "engine_class": case["kind"], "class": case["kind"],
            "dtype": case["dtype"], "flops": float(flops), "bytes": float(nbytes),
            "shape": shape, "measured_s": case["device_us"] * 1e-6, "op": case["op"]}  # fmt: skip


def load(name: str) -> list[dict]:
    return [model_inputs(c) for c in json.loads((HERE / name).read_text())["cases"]]


def kernel_time(profile, item: dict) -> float:
    """The op's device time less the latency an idle GPU's launch adds: the profiler's kernel
    time, which the sweep measured, starts when the kernel does."""
    return predict(profile, item) - profile.launch_latency_s


def errors(profile, items: list[dict]) -> np.ndarray:
    return np.array([kernel_time(profile, i) / i["measured_s"] - 1 for i in items])


def section() -> str:
    lines = [
        HEADING,
        "",
        "Produced by `cd simulator/calibration && python validate_row_sweep.py` from "
        "`measure_row_sweep.py`'s runs (profiler kernel time, L2 flushed, median of 5), "
        "predicted less the launch latency an idle GPU adds (as the GEMM sweeps). "
        "|error| = |predicted / measured - 1|. The reductions are held out: the launch model "
        "was fitted on the H100 catalogue's reductions only.",
        "",
        "| profile | kernels | n | median | p90 | worst | over 25 % |",
        "|---|---|---|---|---|---|---|",
    ]
    worst_lines = []
    for profile_name, sweep in SWEEPS.items():
        profile = load_profile(profile_name)
        items = load(sweep)
        groups = {
            "reductions: sum, mean": [i for i in items if i["op"] in ("sum", "mean")],
            "reductions: amax": [i for i in items if i["op"] == "amax"],
            "softmax": [i for i in items if i["op"] == "softmax"],
        }
        for name, sel in groups.items():
            e = np.abs(errors(profile, sel))
            lines.append(
                f"| {profile_name} | {name} | {len(sel)} | {np.median(e):.1%} | "
                f"{np.quantile(e, 0.9):.1%} | {e.max():.1%} | {int((e > 0.25).sum())} |"
            )
        signed = errors(profile, items)
        for k in np.argsort(-np.abs(signed))[:8]:
            i = items[k]
            worst_lines.append(
                f"| {profile_name} | {i['label']} | {i['measured_s'] * 1e6:.1f} us | "
                f"{kernel_time(profile, i) * 1e6:.1f} us | {signed[k]:+.1%} |"
            )
    lines += ["", "Worst predictions:", "", "| profile | kernel | measured | predicted | error |",
              "|---|---|---|---|---|", *worst_lines]  # fmt: skip
    return "\n".join(lines)


# Softmax terms fitted on this sweep (--fit), each on the rows it prices: (TOML table, key,
# the rows). Warp rows (<= 2048 elements) of fp32 stream faster per element than bf16's when
# few rows run (the H100's 256-row sweep: 4.5 against 6.2 us at 1000 elements), so fp32 has
# its own per-row rate.
SWEEP_TERMS = (
    (("efficiency", "softmax", "fp32"), "warp_row_gbps",
     lambda i: i["dtype"] == "fp32" and i["shape"][-1] <= WARP_ROW_ELEMENTS),
    (("efficiency", "softmax"), "short_row_tflops",
     lambda i: i["shape"][-1] <= SHORT_ROW_ELEMENTS),
    (("efficiency", "softmax"), "register_row_tflops",
     lambda i: not warp_per_row(i["shape"], i["dtype"])
     and block_softmax_kernel(i["shape"], i["dtype"]) == "registers"),
)  # fmt: skip


def fit_sweep_terms() -> dict[str, float]:
    """Each SWEEP_TERMS value that best prices its rows of the H100 sweep's softmax (least
    squares on log(predicted / measured)), in turn; written into h100-sxm.toml."""
    text = PROFILE_PATH.read_text()
    data = tomllib.loads(text)
    softmax = [i for i in load(SWEEPS["h100-sxm"]) if i["op"] == "softmax"]
    fitted = {}
    for tables, key, chosen in SWEEP_TERMS:
        table = functools.reduce(lambda t, name: t[name], tables, data)
        rows = [i for i in softmax if chosen(i)]

        def cost(log_value: float) -> float:
            table[key] = math.exp(log_value)  # noqa: B023 (evaluated within this turn)
            profile = profile_from_dict("h100-sxm", data)
            return float(np.sum(np.log1p(errors(profile, rows)) ** 2))  # noqa: B023

        # A grid first: where another term binds the cost is flat, and a bracketing search
        # started there stays there.
        grid = np.linspace(math.log(0.1), math.log(100), 70)
        start = grid[int(np.argmin([cost(x) for x in grid]))]
        step = grid[1] - grid[0]
        best = minimize_scalar(cost, bounds=(start - step, start + step), method="bounded")
        table[key] = value = float(f"{math.exp(best.x):.4g}")
        heading = "[" + ".".join(tables) + "]"
        section = text.index(heading)
        line = re.compile(rf"^{key} = [0-9.e+-]+", re.M).search(text, section)
        text = text[: line.start()] + f"{key} = {value}" + text[line.end() :]
        fitted[".".join((*tables, key))] = value
    PROFILE_PATH.write_text(text)
    return fitted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print; write nothing")
    ap.add_argument("--fit", action="store_true", help="fit softmax's short_row_tflops first")
    args = ap.parse_args()
    if args.fit and not args.dry_run:
        for path, value in fit_sweep_terms().items():
            print(f"h100-sxm {path} = {value} (run derive_h200.py next)")
    publish(HERE / "REPORT.md", HEADING, section(), args.dry_run)


if __name__ == "__main__":
    main()
