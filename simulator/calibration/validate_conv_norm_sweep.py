"""Price the conv / batch-norm sweeps (measure_conv_norm_sweep.py) on the shipped profiles and
write their section of calibration/REPORT.md: each case runs through the public torch API on
kpt_sim (timing only), its launches priced one by one as the profiler times queued kernels
(step_traces.launch_seconds: no host), against the profiler's kernel sum on the GPU.

    python validate_conv_norm_sweep.py [--dry-run]   # every sweep on file, its chip's profile
    python validate_conv_norm_sweep.py --rows        # and every case (printed, not written)

Needs kpt-adapter-sim (CPU only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from measure_conv_norm_sweep import conv_calls, norm_calls  # noqa: E402
from report_sections import publish  # noqa: E402
from step_traces import launch_seconds, launches, record  # noqa: E402

from kpt.sim import load_profile  # noqa: E402

SWEEPS = {"h100-sxm": "h100_conv_norm_sweep.json", "h200": "h200_conv_norm_sweep.json"}
HEADING = "## Conv / batch-norm sweep (training-mode batch norm, convolution backward)"
PARTS = ("forward", "forward_backward")


def priced_us(ops: list[dict], profile) -> float:
    """Device microseconds of recorded kpt_sim launches, each priced alone."""
    return 1e6 * sum(launch_seconds(op, profile) for op in ops)


def cases(sweep: dict):
    """(group, label, (forward, forward+backward) on kpt_sim, the measured row)."""
    for row in sweep["batch_norm"]:
        label = f"bn b{row['batch']} c{row['channels']} {row['side']}x{row['side']}"
        calls = norm_calls(row["batch"], row["channels"], row["side"], row["dtype"],
                           row["layout"], "kpt_sim")  # fmt: skip
        yield f"batch norm {row['dtype']} {row['layout']}", label, calls, row
    for row in sweep["conv"]:
        shape = (row["in"], row["out"], row["side"], row["window"], row["stride"])
        label = (f"conv b{row['batch']} {row['in']}->{row['out']} {row['side']}x{row['side']} "
                 f"k{row['window']} s{row['stride']}")  # fmt: skip
        calls = conv_calls(row["batch"], shape, row["dtype"], row["layout"], "kpt_sim")
        yield f"conv {row['dtype']} {row['layout']}", label, calls, row


def recorded(sweep: dict):
    """(group, case, part, kpt_sim launches, measured us) of every case part of one sweep, each
    recorded once through kpt_sim."""
    with tempfile.TemporaryDirectory(prefix="kpt-conv-norm-") as tmp:
        for group, label, calls, row in cases(sweep):
            for part, fn in zip(PARTS, calls):
                ops = launches(record(fn, Path(tmp) / "case.json"))
                yield group, label, part, ops, row[part]["device_us"]


def priced(profile_name: str, sweep: dict) -> list[tuple[str, str, str, float, float]]:
    """(group, case, part, measured us, predicted us) of every case part of one sweep."""
    profile = load_profile(profile_name)
    return [(group, label, part, measured, priced_us(ops, profile))
            for group, label, part, ops, measured in recorded(sweep)]  # fmt: skip


def _summary(label: str, errors: list[float]) -> str:
    absolute = sorted(abs(e) for e in errors)
    p90 = absolute[int(0.9 * (len(absolute) - 1))]
    return (f"| {label} | {len(errors)} | {statistics.median(errors):+.1%} | "
            f"{statistics.median(absolute):.1%} | {p90:.1%} |")  # fmt: skip


def repeat_spread(first: dict, second: dict) -> float:
    """Median |second / first - 1| of the case parts two runs of the sweep share."""

    def times(sweep):
        return [row[part]["device_us"] for group in ("batch_norm", "conv") for row in sweep[group]
                for part in PARTS]  # fmt: skip

    return statistics.median(abs(b / a - 1) for a, b in zip(times(first), times(second)))


def section(show_rows: bool) -> str:
    lines = [HEADING, "", "`python validate_conv_norm_sweep.py`: measure_conv_norm_sweep.py's "
             "cases (F.batch_norm in training mode at ResNet shapes, batches 32-256; bias-free "
             "convolutions, batches 32 and 128; fp32 and bf16, NCHW and channels last; the "
             "forward and forward+backward, each the profiler's kernel sum) run on kpt_sim, "
             "each launch priced as the profiler times a queued kernel.", "",
             "Batch norm's figures and conv's backward_work are fitted on the H100's sweep "
             "(`python fit_conv_norm.py`); the H200's is held out (its profile derived, not "
             "refitted). Median error (signed), median and p90 |error| of predicted / measured "
             "device time:", ""]  # fmt: skip
    details = []
    for profile_name, filename in SWEEPS.items():
        path = HERE / filename
        if not path.exists():
            continue
        sweep = json.loads(path.read_text())
        rows = priced(profile_name, sweep)
        groups: dict[str, list[float]] = {}
        kinds: dict[str, list[float]] = {}  # batch norm, conv: every part of every case
        for group, label, part, measured, predicted in rows:
            error = predicted / measured - 1
            groups.setdefault(f"{group} {part}", []).append(error)
            kinds.setdefault(f"all {group.rsplit(' ', 2)[0]}", []).append(error)
            details.append(f"| {profile_name} | {label} {group} {part} | {measured:.1f} | "
                           f"{predicted:.1f} | {error:+.1%} |")  # fmt: skip
        lines += [f"| {profile_name}: cases | parts | median error | median abs | p90 abs |",
                  "|---|---|---|---|---|",
                  *(_summary(g, e) for g, e in {**groups, **kinds}.items())]  # fmt: skip
        repeat = path.with_name(path.stem + "_r2.json")
        if repeat.exists():
            spread = repeat_spread(sweep, json.loads(repeat.read_text()))
            lines += ["", f"A second run of the {profile_name} sweep on the same machine "
                          f"({repeat.name}) differs from the first by {spread:.1%} a case part "
                          "(median)."]  # fmt: skip
        lines.append("")
    if show_rows:
        lines += ["| profile | case | measured us | predicted us | error |",
                  "|---|---|---|---|---|", *details]  # fmt: skip
    return "\n".join(lines).rstrip("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", action="store_true", help="print every case too (not written)")
    ap.add_argument("--dry-run", action="store_true", help="print; write nothing")
    args = ap.parse_args()
    import kpt.adapters.sim  # noqa: F401  (registers the kpt_sim device)

    publish(HERE / "REPORT.md", HEADING, section(args.rows), args.dry_run or args.rows)


if __name__ == "__main__":
    main()
