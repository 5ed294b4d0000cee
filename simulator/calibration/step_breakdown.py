"""One whole step's device time by kernel family: kpt_sim's launches priced on h200 against the
H200 profiler's top kernels of the same step (h200_whole_steps.json), to find which part of a
step's prediction is off. Each launch is priced alone (no host, no overlap), so the sum is a
little above the replay's device-busy figure.

    python step_breakdown.py cnn_bn      # any workload of whole_steps.py
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from step_traces import launch_seconds, launches, record  # noqa: E402
from whole_steps import WORKLOADS, build  # noqa: E402

from kpt.sim import load_profile  # noqa: E402

# family: (pattern over a kpt_sim launch's aten name, pattern over a CUDA kernel's name); None:
# the family has no launch of its own on that side (cuDNN's transposes run inside kpt_sim's
# convolution launches, which charge them).
FAMILIES = {
    "conv forward": (r"aten::convolution\.", r"fprop"),
    "conv backward (data and weight gradients)": (r"convolution_backward", r"[wd]grad"),
    "batch norm": (r"batch_norm", r"cudnn::bn_"),
    "NCHW / NHWC transposes": (None, r"nchwToNhwc|nhwcToNchw"),
}


def family(name: str, side: int) -> str:
    for label, patterns in FAMILIES.items():
        if patterns[side] and re.search(patterns[side], name):
            return label
    return "everything else"


def predicted(workload: str) -> dict[str, float]:
    import kpt.adapters.sim  # noqa: F401  (registers the kpt_sim device)

    step = build(workload, "kpt_sim")
    with tempfile.TemporaryDirectory(prefix="kpt-breakdown-") as tmp:
        trace = record(step.step, Path(tmp) / f"{workload}.json")
    profile, seconds = load_profile("h200"), {}
    for op in launches(trace):
        label = family(op.get("name", ""), 0)
        seconds[label] = seconds.get(label, 0.0) + launch_seconds(op, profile)
    return seconds


def measured(workload: str) -> tuple[dict[str, float], dict]:
    kernels = json.loads((HERE / "h200_whole_steps.json").read_text())["steps"][workload]["kernels"]
    seconds: dict[str, float] = {}
    for kernel in kernels["top"]:
        label = family(kernel["name"], 1)
        seconds[label] = seconds.get(label, 0.0) + kernel["us"] * 1e-6
    return seconds, kernels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=WORKLOADS)
    workload = ap.parse_args().workload
    ours = predicted(workload)
    theirs, kernels = measured(workload)
    print(f"| {workload}: family | h200 predicted ms (each launch alone) | H200 measured ms "
          f"(top {len(kernels['top'])} kernels) |\n|---|---|---|")  # fmt: skip
    for label in [*FAMILIES, "everything else"]:
        mine = f"{ours[label] * 1e3:.2f}" if label in ours else "-"
        print(f"| {label} | {mine} | {theirs.get(label, 0.0) * 1e3:.2f} |")
    print(f"| all | {sum(ours.values()) * 1e3:.2f} | {sum(theirs.values()) * 1e3:.2f} (of "
          f"{kernels['device_seconds'] * 1e3:.2f} over {kernels['count']} kernels) |")  # fmt: skip


if __name__ == "__main__":
    main()
