"""Host and GPU apart: the held reps of measure_h200_steps.py against kpt_sim's two sides.

A held rep holds the GPU (torch.cuda._sleep, three of the step's walls) and then issues the
step, so the host's issue time (perf_counter over the call) and the GPU's time with no host gap
(CUDA events from the hold's end to the step's last kernel) are timed apart. kpt_sim's replay
gives the same two: when the host had issued the last launch (`host_end_s`), on the profile
derived at the run's host speed, and the end of the device's work on the profile without host
time. A wall that misses can then be told apart: the host model, or the device side. Nothing is
fitted on these reps. Also the fused calls timed alone on the GPU (`fused_section`).
predict_h200_steps.py computes both sides and writes the two tables into simulator/REPORT.md.
"""

from __future__ import annotations

import statistics
from pathlib import Path


def no_host_profile(no_host_h200: str, tmp: Path, hbm_gbps: float) -> str:
    """The h200 profile without host time, at another chip's datasheet HBM figure (h100-sxm's
    device figures, as for the H100 runs' walls)."""
    from kpt.sim._derive import Datasheet, write_derived

    out = tmp / f"h200-no-host-hbm{hbm_gbps:.0f}.toml"
    return str(write_derived(no_host_h200, Datasheet(hbm_bandwidth_gbps=hbm_gbps), out))


def predicted_apart(trace: dict, host_profile: str, device_s: float) -> dict:
    """kpt_sim's host time for one recorded step (host_profile: at the run's host speed), and
    its device time alone (device_s: the step's end on the profile without host time)."""
    from kpt.sim import replay

    return {"host_s": replay(trace, profile=host_profile)["devices"][0]["host_end_s"],
            "device_s": device_s}  # fmt: skip


def measured_apart(step: dict) -> dict | None:
    """The held reps' medians, or None for a run without them (every run before the H100's k)."""
    held = step.get("held")
    if not held:
        return None
    return {"host_s": held["host_median_s"], "device_s": held["device_median_s"],
            "past_hold": held["past_hold"], "reps": len(held["reps"])}  # fmt: skip


def _cell(predicted: float, measured: float) -> str:
    return f"{predicted * 1e3:.2f} / {measured * 1e3:.2f} ({predicted / measured - 1:+.0%})"


def _errors(rows: list[dict], side: str) -> str:
    errors = sorted(abs(r["predicted"][side] / r["measured"][side] - 1) for r in rows)
    return f"median |error| {statistics.median(errors):.1%}, worst {errors[-1]:.1%}"


def section(steps: list[dict], runs: list[tuple[str, str, str]]) -> list[str]:
    """REPORT.md's table of the held runs: runs are (label, key of the step's run table,
    chip); a run is listed when every workload of it has held reps."""
    held = [(label, key, chip) for label, key, chip in runs
            if all(r[key].get(label, {}).get("held") for r in steps)]  # fmt: skip
    if not held:
        return []
    lines = [
        "## Host and GPU apart (held reps)", "",
        "From the H100 run k on, each step is also timed 20 times with the GPU held "
        "(`torch.cuda._sleep`, three of the step's walls) while the host issues it: the host's "
        "time alone (perf_counter over the call) and the GPU's alone, never waiting for the host "
        "(CUDA events from the hold's end to the last kernel), medians over the reps. kpt_sim "
        "gives the same two from one replay of the recorded step: when the host had issued the "
        "last launch (`host_end_s`), on the profile derived at the run's paired host speed, and "
        "the device's end on the profile without host time (`calibration/held_steps.py`). "
        "Predicted / measured ms; the wall is the paired reps' (the tables above).", "",
        "| run | workload | host alone | GPU alone | GPU kernels' sum (profiler) | wall |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    summary = []
    for label, key, chip in held:
        rows, speeds = [], []
        for r in steps:
            run = r[key][label]
            rows.append(run["held"])
            speeds += run["host_speeds"]
            measured, predicted = run["held"]["measured"], run["held"]["predicted"]
            lines.append(f"| {label} ({chip}) | {r['workload']} | "
                         f"{_cell(predicted['host_s'], measured['host_s'])} | "
                         f"{_cell(predicted['device_s'], measured['device_s'])} | "
                         f"{run['busy_s'] * 1e3:.2f} | "
                         f"{_cell(run['predicted_s'], run['wall_s'])} |")  # fmt: skip
        past = sum(row["measured"]["past_hold"] for row in rows)
        summary.append(f"- {label} ({chip}, paired host speeds {min(speeds):.2f}-"
                       f"{max(speeds):.2f}): host alone {_errors(rows, 'host_s')}; "
                       f"GPU alone {_errors(rows, 'device_s')}; reps whose host outlasted "
                       f"the hold: {past}")  # fmt: skip
    return [*lines, "", *summary, ""]


def fused_section(runs: dict[str, list[dict]]) -> list[str]:
    """REPORT.md's table of the fused kernels timed alone (runs: label -> the rows of
    predict_h200_steps' sdpa, rnn and optimizers on that run's file): the profiler's kernel sum,
    the GPU's time alone (one call behind a 50 ms hold, CUDA events), and kpt_sim's."""
    labels = [label for label, rows in runs.items() if any("gpu_alone_s" in r for r in rows)]
    if not labels:
        return []
    first = [r for r in runs[labels[0]] if "gpu_alone_s" in r]
    lines = [
        "## Fused kernels alone on the GPU (H100 runs " + ", ".join(labels) + ")", "",
        "The fused-kernel tables above compare kpt_sim with the profiler's kernel sum, which "
        "leaves out the time between a launch's kernels. These runs also time each call alone on "
        "the GPU: issued behind a 50 ms hold, CUDA events around it "
        "(`measure_h200_steps.gpu_alone`), so its kernels run back to back as the host never "
        "keeps them waiting. kpt_sim on h100-sxm's device figures, and its kernels alone (the "
        "profile without kernel_queued_us and [rnn]'s gap, stack and directions, as the profiler "
        "sums them); "
        "us; the gap is (alone - sum) per kernel.", "",
        "| kernel | kernels | kernel sum | GPU alone | gap per kernel | kpt_sim | vs GPU alone | "
        "kpt_sim's kernels | vs kernel sum |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    gaps = []
    for row in first:
        same = [r for label in labels for r in runs[label] if r["kernel"] == row["kernel"]]
        alone = statistics.median(r["gpu_alone_s"] for r in same)
        summed = statistics.median(r["measured_s"] for r in same)
        gap = (alone - summed) / row["kernels"]
        gaps.append(gap)
        full, kernels = row["predicted_alone_s"], row["predicted_s"]
        lines.append(f"| {row['kernel']} | {row['kernels']} | {summed * 1e6:.1f} | "
                     f"{alone * 1e6:.1f} | {gap * 1e6:+.2f} | {full * 1e6:.1f} | "
                     f"{full / alone - 1:+.1%} | {kernels * 1e6:.1f} | "
                     f"{kernels / summed - 1:+.1%} |")  # fmt: skip
    return [*lines, "", f"The medians over the runs' figures. Gap per kernel: median "
            f"{statistics.median(gaps) * 1e6:.2f} us over {len(gaps)} calls; a negative gap is "
            "kernels that overlapped (cuDNN runs a two-layer LSTM's layers on several streams).",
            ""]  # fmt: skip
