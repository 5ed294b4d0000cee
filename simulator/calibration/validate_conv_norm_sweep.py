"""Price the conv / batch-norm sweep (measure_conv_norm_sweep.py) on a shipped profile: each
case runs through the public torch API on kpt_sim (timing only), its launches priced one by
one (kpt.sim.op_time, no host), against the profiler's kernel sum on the GPU.

    python validate_conv_norm_sweep.py                 # every sweep on file, its chip's profile
    python validate_conv_norm_sweep.py --rows          # and every case

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
from step_traces import launch_seconds, launches, record  # noqa: E402

from kpt.sim import load_profile  # noqa: E402

SWEEPS = {"h100-sxm": "h100_conv_norm_sweep.json", "h200": "h200_conv_norm_sweep.json"}
PARTS = ("forward", "forward_backward")


def priced_us(fn, profile, tmp: Path) -> float:
    """Device microseconds of one call of fn on kpt_sim, each launch priced alone."""
    return 1e6 * sum(launch_seconds(op, profile) for op in launches(record(fn, tmp / "case.json")))


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


def validate(profile_name: str, sweep: dict, show_rows: bool) -> list[str]:
    profile, groups, lines = load_profile(profile_name), {}, []
    with tempfile.TemporaryDirectory(prefix="kpt-conv-norm-") as tmp:
        for group, label, calls, row in cases(sweep):
            for part, fn in zip(PARTS, calls):
                measured = row[part]["device_us"]
                predicted = priced_us(fn, profile, Path(tmp))
                error = predicted / measured - 1
                groups.setdefault(f"{group} {part}", []).append(error)
                if show_rows:
                    lines.append(f"| {label} {group} {part} | {measured:.1f} us | "
                                 f"{predicted:.1f} us | {error:+.1%} |")  # fmt: skip
    out = [f"| {profile_name}: group | cases | median error | median abs | p90 abs |",
           "|---|---|---|---|---|"]  # fmt: skip
    for group, errors in groups.items():
        absolute = sorted(abs(e) for e in errors)
        out.append(f"| {group} | {len(errors)} | {statistics.median(errors):+.1%} | "
                   f"{statistics.median(absolute):.1%} | "
                   f"{absolute[int(0.9 * (len(absolute) - 1))]:.1%} |")  # fmt: skip
    return out + (["", *lines] if lines else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", action="store_true", help="print every case")
    args = ap.parse_args()
    import kpt.adapters.sim  # noqa: F401  (registers the kpt_sim device)

    for profile_name, filename in SWEEPS.items():
        path = HERE / filename
        if path.exists():
            print("\n".join(validate(profile_name, json.loads(path.read_text()), args.rows)))
            print()


if __name__ == "__main__":
    main()
