"""Validate the derived `h200` profile against the real H200, without refitting anything.

Reads h200_measurements.json (measure_h200.py, one run on an H200), turns each kernel into
the cost model's inputs exactly as fit.py does for the H100, and predicts it with the shipped
`h200` profile (derived from h100-sxm and the datasheet by `kpt-sim profile derive`) and,
for contrast, with `h100-sxm` itself. Writes h200_dataset.json (the cost model's inputs and
measured seconds; tests/test_calibration.py holds the profile to it) and the "H200
validation" section of REPORT.md:
|error| per class (median, p90), the small-op rows, and how often the measurement fell inside
`kpt.sim.interval`'s band (the H100 residuals' 10th-90th percentile: about 80% if it carries).

Usage: python validate_h200.py [--dry-run]   (needs kpt.sim, numpy, scipy)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from fit_dataset import STEADY, model_inputs, predict
from report_sections import write_section

from kpt.sim import load_profile
from kpt.sim._uncertainty import band

HERE = Path(__file__).parent
HEADING = "## H200 validation (derived profile, not refitted)"
BEFORE_HOLD = HERE / "h200_measurements_nohold.json"


def items(meas: dict) -> list[dict]:
    out = []
    for rec in meas["records"]:
        item = model_inputs(rec)
        if item is None:
            continue
        if rec.get("small_op"):
            item["report_class"] = f"small ops ({item['report_class']})"
            item["host_s"] = rec["host_seconds_per_call"]
        out.append(item)
    return out


def table(rows: list[dict], h200, h100) -> list[str]:
    lines = [
        "| class | n | h200 median | h200 p90 | h100-sxm median | h100-sxm p90 | in band | "
        "steady n | h200 median, steady | h200 p90, steady |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    classes = sorted({r["report_class"] for r in rows})
    for cls in [*classes, "all kernels"]:
        sel = [r for r in rows if cls == "all kernels" or r["report_class"] == cls]
        if cls == "all kernels":
            sel = [r for r in sel if r["kind"] == "op"]
        e200 = np.array([abs(predict(h200, r) / r["measured_s"] - 1) for r in sel])
        e100 = np.array([abs(predict(h100, r) / r["measured_s"] - 1) for r in sel])
        calm = np.array([e for e, r in zip(e200, sel) if r["steady"]])
        steady_cells = (f"{len(calm)} | {np.median(calm):.1%} | {np.quantile(calm, 0.9):.1%} |"
                        if len(calm) else "0 | - | - |")  # fmt: skip
        inside = [r for r in sel if r["kind"] == "op" and _inside(h200, r)]
        ops = sum(r["kind"] == "op" for r in sel)
        lines.append(
            f"| {cls} | {len(sel)} | {np.median(e200):.1%} | {np.quantile(e200, 0.9):.1%} | "
            f"{np.median(e100):.1%} | {np.quantile(e100, 0.9):.1%} | "
            + (f"{len(inside) / ops:.0%} | " if ops else "- | ")
            + steady_cells
        )
    return lines


def steady_note(rows: list[dict], h200) -> list[str]:
    """How many timings were unsteady in this run and in the run before the hold."""
    before = items(json.loads(BEFORE_HOLD.read_text())) if BEFORE_HOLD.exists() else []

    def summary(sel: list[dict]) -> str:
        ops = [r for r in sel if r["kind"] == "op"]
        errs = np.array([abs(predict(h200, r) / r["measured_s"] - 1) for r in ops])
        unsteady = sum(not r["steady"] for r in ops)
        return (f"{unsteady} of {len(ops)} kernel timings unsteady; all kernels: median "
                f"|error| {np.median(errs):.1%}, p90 {np.quantile(errs, 0.9):.1%}")  # fmt: skip

    lines = [
        f"Steady: timings whose median is within {STEADY}x of their fastest rep. This run held "
        "the GPU between the L2 flush and the start event (kernel_timing.py: torch.cuda._sleep "
        f"for HOLD_S), so the host's issue time stays outside the timed window: {summary(rows)}."
    ]
    if before:
        lines[0] += (
            f" The run before the hold (`{BEFORE_HOLD.name}`, the same catalogue): "
            f"{summary(before)}; its host issued small kernels after the GPU had finished the "
            "flush (53 us on an H200), so host time fell inside their windows."
        )
    lines[0] += (
        " Fitted on other H200 data: the matmul class's skinny regime (fit_skinny_gemm.py, "
        "which shares this catalogue's 1, 16 and 128 x 4096 x 4096 shapes) and the misaligned "
        "GEMM rates (fit_misaligned_gemm.py); nothing else."
    )
    return lines


def _inside(profile, item: dict) -> bool:
    low, high = band(profile, item["engine_class"])
    predicted = predict(profile, item)
    return predicted * low <= item["measured_s"] <= predicted * high


def section(meas: dict) -> str:
    h200, h100 = load_profile("h200"), load_profile("h100-sxm")
    rows = items(meas)
    dev = meas["device"]
    smi = dev.get("nvidia_smi", {})
    launch = meas.get("launch", {})
    small = [r for r in rows if "host_s" in r]
    host = sorted(r["host_s"] for r in small)
    out = [
        HEADING,
        "",
        f"One run of `measure_h200.py` on an {dev.get('name', 'NVIDIA H200')} (driver "
        f"{smi.get('driver_version', '?') if isinstance(smi, dict) else '?'}, torch "
        f"{dev.get('torch')}), {len(rows)} kernels through the public torch API, L2 flushed; "
        "predicted by the shipped `h200` profile (`kpt-sim profile derive --from h100-sxm "
        "--hbm-bandwidth 4800 --hbm-capacity 141`) with nothing fitted on this run, and by "
        '`h100-sxm` for contrast. |error| = |predicted / measured - 1|. "in band": measured inside '
        "`kpt.sim.interval` (the H100 held-out residuals' 10th-90th percentile per class).",
        "",
        *table(rows, h200, h100),
        "",
        *steady_note(rows, h200),
        "",
        f"Small ops: host time per eager call {np.median(host) * 1e6:.1f} us median "
        f"({host[0] * 1e6:.1f}-{host[-1] * 1e6:.1f}); the profile's [host] table charges "
        f"{h200.host.forward_s * 1e6:.1f} us per forward launch (fitted on model-shaped programs "
        "by host_model_fit.py). "
        f"Tiny kernel back to back (CUDA graph) {launch.get('device_seconds_per_kernel_graph', 0) * 1e6:.2f} us "  # noqa: E501
        f"against the profile's {(h200.kernel_launch_s - h200.launch_latency_s) * 1e6:.2f}.",
        "",
        "Whole steps on the H200, host time included: simulator/REPORT.md (`python "
        "predict_h200_steps.py`).",
        "",
        "Reproduce: `cd simulator/calibration && python validate_h200.py` (the raw file is "
        "`h200_measurements.json`; the run's log `h200_measure_log.txt`).",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    meas = json.loads((HERE / "h200_measurements.json").read_text())
    text = section(meas)
    print(text)
    if args.dry_run:
        return
    rows = [{k: v for k, v in r.items() if k != "causal"} for r in items(meas)]
    (HERE / "h200_dataset.json").write_text(
        json.dumps({"schema": 1, "source": "h200_measurements.json", "items": rows}, indent=0)
    )
    write_section(HERE / "REPORT.md", HEADING, text)


if __name__ == "__main__":
    main()
