"""The H200's GEMM sweeps against what the shipped profiles price them at.

Reads h200_skinny_gemm.json (measure_skinny_gemm.py: decode-time products, a few rows times a
serving model's weight) and h200_misaligned_gemm.json (measure_misaligned_gemm.py: rows no
16-byte load reads), and prices each GEMM as kpt_sim's executor shapes it (kpt.sim.op_timing,
less the launch latency an idle GPU pays: the measurement is the profiler's kernel time).
Writes the "H200 GEMM sweeps" section of REPORT.md.

Usage: python validate_gemm_sweeps.py [--dry-run]   (needs kpt.sim, numpy)
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from report_sections import publish

from kpt.sim import load_profile, op_timing
from kpt.sim._cost import misaligned

HERE = Path(__file__).parent
HEADING = "## H200 GEMM sweeps (skinny and misaligned bf16 GEMMs)"
PROFILES = ("h200", "h100-sxm")
# Each form's GEMM as the executor shapes it, (M, N, K, row alignment in bytes), from the
# sweep's (m, n, k) where the odd row is n wide: the forward reads it as N, the input gradient
# as the inner size, the weight gradient as a transposed operand's leading dimension (only its
# stride shows: n bf16 elements).
FORMS = {
    "output": lambda m, n, k: (m, n, k, 16),
    "inner": lambda m, n, k: (m, k, n, 16),
    "transposed": lambda m, n, k: (n, k, m, 2 * (n & -n)),
}


def kernel_s(profile, row: dict, shape: tuple[int, ...]) -> float:
    """One GEMM's device time, less the latency an idle GPU's launch adds (the profiler's
    kernel time starts when the kernel does)."""
    moved = 2.0 * (row["m"] * row["k"] + row["n"] * row["k"] + row["m"] * row["n"])
    timing = op_timing(profile, "matmul", row["flops"], moved, "bf16", shape)
    return timing.duration - profile.launch_latency_s


def kernel_family(row: dict) -> str:
    """The row's costliest kernel, named by what cuBLAS picked (gemv, split-K, a tile)."""
    name = max(row["kernels"].items(), key=lambda kv: kv[1]["us"])[0]
    for family in ("gemv", "splitKreduce", "gemmSN", "gemm"):
        if family.lower() in name.lower():
            return family
    return name[:24]


def errors(rows: list[dict]) -> list[float]:
    return [abs(r["predicted_us"] / r["device_us"] - 1) for r in rows]


def summary(rows: list[dict]) -> str:
    errs = errors(rows)
    median, p90 = np.median(errs), np.percentile(errs, 90)
    return f"median |error| {median:.1%}, p90 {p90:.1%} over {len(errs)}"


def priced(rows: list[dict], shape_of) -> dict[str, list[dict]]:
    out = {}
    for name in PROFILES:
        profile = load_profile(name)
        out[name] = [{**r, "predicted_us": kernel_s(profile, r, shape_of(r)) * 1e6} for r in rows]
    return out


def skinny_section(data: dict) -> list[str]:
    rows = priced(data["gemms"], lambda r: (r["m"], r["n"], r["k"]))
    ms = sorted({r["m"] for r in data["gemms"]})
    lines = [
        "### Skinny GEMMs: F.linear(x [M, K], W [N, K]), measured us (h200's error)",
        "",
        "| weight | " + " | ".join(f"M={m}" for m in ms) + " |",
        "|---|" + "---|" * len(ms),
    ]
    cells = defaultdict(dict)
    for r in rows["h200"]:
        err = r["predicted_us"] / r["device_us"] - 1
        cells[(r["model"], r["layer"], r["n"], r["k"])][r["m"]] = (
            f"{r['device_us']:.1f} ({err:+.0%}) {kernel_family(r)}"
        )
    for (model, layer, n, k), by_m in cells.items():
        measured = " | ".join(by_m.get(m, "") for m in ms)
        lines.append(f"| {model} {layer} {n}x{k} | {measured} |")
    lines.append("")
    for name in PROFILES:
        lines.append(f"- {name}: {summary(rows[name])}; M <= 16: "
                     f"{summary([r for r in rows[name] if r['m'] <= 16])}")  # fmt: skip
    big = [r for r in rows["h200"] if r["m"] <= 16 and r["bytes"] > 64e6
           and not misaligned("bf16", (r["m"], r["n"], r["k"]))]  # fmt: skip
    if big:
        rates = [r["bytes"] / r["device_us"] / 1e6 for r in big]
        lines.append(f"- Aligned weights over 64 MB at M <= 16 streamed at {min(rates):.2f}-"
                     f"{max(rates):.2f} TB/s (median {statistics.median(rates):.2f}).")  # fmt: skip
    return lines


def misaligned_section(data: dict) -> list[str]:
    rows = priced(data["gemms"], lambda r: FORMS[r["form"]](r["m"], r["n"], r["k"]))
    groups = defaultdict(list)
    for r in rows["h200"]:
        groups[(r["align"], r["form"])].append(r)
    lines = [
        "### Misaligned GEMMs: the odd row N wide (align1: odd; align2: 2 mod 4; align4: 4 mod 8)",
        "",
        "| alignment | form | n | measured TFLOP/s, median (range) | h200 median error | "
        "h200 median \\|error\\| | p90 |",
        "|---|---|---|---|---|---|---|",
    ]
    for (align, form), group in sorted(groups.items()):
        tf = [r["flops"] / r["device_us"] / 1e6 for r in group]
        signed = [r["predicted_us"] / r["device_us"] - 1 for r in group]
        errs = errors(group)
        lines.append(
            f"| {align} | {form} | {len(group)} | {statistics.median(tf):.0f} "
            f"({min(tf):.0f}-{max(tf):.0f}) | {statistics.median(signed):+.1%} | "
            f"{np.median(errs):.1%} | {np.percentile(errs, 90):.1%} |"
        )
    lines += ["", "By K, the width beside the odd row (every form): measured TFLOP/s, median", ""]
    by_k = defaultdict(list)
    for r in rows["h200"]:
        by_k[(r["align"], r["k"])].append(r["flops"] / r["device_us"] / 1e6)
    ks = sorted({k for _, k in by_k})
    aligns = sorted({a for a, _ in by_k})
    lines += ["| alignment | " + " | ".join(f"K={k}" for k in ks) + " |",
              "|---|" + "---|" * len(ks)]  # fmt: skip
    for align in aligns:
        lines.append(f"| {align} | " + " | ".join(
            f"{statistics.median(by_k[(align, k)]):.0f}" for k in ks) + " |")  # fmt: skip
    lines.append("")
    for name in PROFILES:
        lines.append(f"- {name}: {summary(rows[name])}")
    return lines


def section() -> str:
    out = [HEADING, ""]
    for filename, build in (("h200_skinny_gemm.json", skinny_section),
                            ("h200_misaligned_gemm.json", misaligned_section)):  # fmt: skip
        path = HERE / filename
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        device = data["device"].get("name", "?")
        out += [f"`{filename}`: {device}, torch {data['torch']}, the median of "
                f"{data['reps']} profiled calls, L2 flushed before each.", ""]  # fmt: skip
        out += [*build(data), ""]
    out.append("Reproduce: `cd simulator/calibration && python validate_gemm_sweeps.py`.")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    publish(HERE / "REPORT.md", HEADING, section(), args.dry_run)


if __name__ == "__main__":
    main()
