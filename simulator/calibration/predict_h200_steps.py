"""Issue 12's targets on kpt_sim against a real H200, nothing refitted: simulator/REPORT.md.

Every workload runs unchanged through the public torch API on the kpt_sim device (timing only),
one call's ops are recorded and replayed on the shipped `h200` profile (derived from the H100
calibration and the H200 datasheet; its [host] table fitted on separate host programs by
host_model_fit.py), and compared with h200_whole_steps.json / h200_fused_kernels.json
(measure_h200_steps.py, one run on a real H200), and the whole steps also with every other
run's (RUNS: the host's speed moves between runs), at the profile's host and at each run's own
(the profile derived at the run's host speed, `kpt-sim profile derive --host-scale`, measured
by the eager op loops the [host] table was fitted on). Nothing here is fitted.

- whole steps: synchronised wall per step, host time included (the target: median |error|
  <= 10 %, worst <= 25 %), and device-busy time against the profiler's kernel sum;
- fused kernels: SDPA forward and forward+backward, LSTM layers, optimizer steps: simulated
  device time (host time set to zero) against the measured kernels.

Usage: python predict_h200_steps.py [--dry-run]   (needs kpt-adapter-sim; CPU only, ~3 min)
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fused_calls import kernels_only, optimizers, replay_s, rnn, sdpa  # noqa: E402
from held_steps import (  # noqa: E402
    fused_section,
    measured_apart,
    no_host_profile,
    predicted_apart,
)
from held_steps import section as held_section  # noqa: E402
from host_model_fit import (  # noqa: E402
    FIGURES,
    PROFILE,
    host_speed,
    profile_with,
    run_programs,
    strip_host,
)
from step_traces import launches, record  # noqa: E402
from whole_steps import WORKLOADS, build  # noqa: E402

REPORT = HERE.parent / "REPORT.md"
# The H200 runs of measure_h200_steps.py whose whole steps are predicted: (label, file suffix,
# where it ran). The unsuffixed files are the first run the [host] table is fitted on.
RUNS = (
    ("r1", "_r1", "an earlier session's machine"),
    ("r2", "_r2", "a later session's first machine"),
    ("r3", "_r3", "that session's second machine"),
    ("r4", "_r4", "the same machine as r3, a minute later"),
    ("r5", "", "a third session's machine; the [host] table is fitted on its host programs"),
    ("r6", "_r6", "the same machine as r5, right after it; the table is fitted on its too"),
    ("r7", "_r7", "a fourth session's machine, a host probe beside each step"),
    ("r8", "_r8", "the same machine as r7, right after it, probes too"),
    ("r9", "_r9", "a later machine of that session, probes and backward host loops"),
    ("r10", "_r10", "the same machine as r9, right after it"),
    ("r11", "_r11", "a fifth session's machine, 30 paired reps (a short probe right before each)"),
    ("r12", "_r12", "the same machine as r11, right after it, pinned to one core (taskset -c 2)"),
    ("r13", "_r13", "a seventh session's machine, paired reps as r11's"),
    ("r14", "_r14", "the same machine as r13, right after it"),
    ("r15", "_r15", "an eighth machine (this session's second), paired reps as r11's"),
    ("r16", "_r16", "the same machine as r15, right after it"),
)
# Runs of measure_h200_steps.py that H100 machines ran (asked of an H200, lent an H100),
# paired reps as r11's: two back to back on each of five machines (a-j), then with held reps
# (held_steps.py) three on a sixth (k-m) and two on a machine started later that session (n-o):
# (label, file suffix of h100_whole_steps{suffix}.json). Their steps are predicted on
# h100-sxm's device figures under h200's [host] table.
H100_RUNS = tuple((label, f"_{label}") for label in "abcdefghijklmnopqrs")
H200_HBM_GBPS, H100_HBM_GBPS = 4800.0, 3350.0  # the datasheets' figures
# The runs whose fused kernels were also timed alone on the GPU (measure_h200_steps.gpu_alone),
# held_steps.fused_section's table: H100 runs, on h100-sxm's device figures.
GPU_ALONE_RUNS = ("p", "q", "r", "s")
H100 = str(PROFILE.with_name("h100-sxm.toml"))
NO_HOST = dict.fromkeys(FIGURES, 0.0)
NOTES = [
    "## Notes",
    "",
    "- Where the issue started (its own figures, on an H100): SDPA ran PyTorch's math path on "
    "kpt_sim, 45x off for b8 h32 s2048 d128 bf16 causal; an LSTM LM step 7.8x off (cell by "
    "cell); a GPT-2 inference forward 3.9x off (one host figure per launch). Now SDPA and "
    "nn.LSTM are one launch each way (kpt-adapter-sim `_fused*.py`), fused and foreach "
    "optimizers run as such, and host time is charged per launch source.",
    "- The fused-attention class is h100-sxm's, derived for h200. A causal kernel's blocks (one "
    "per head and tile of queries, each reading the key tiles up to its diagonal) are "
    "dispatched in launch order to the first free SM, each with a fixed start and finish "
    "(`block_tiles`, kpt.sim._flash_schedule): with many blocks per SM the mask saves its share "
    "of the tiles (17 of 32 at 2048 tokens), with few the heaviest blocks set the time (the "
    "class was refitted on the H100 kernels alone, `fit.py --only attention`). The backward "
    "costs 3.1 forwards, the H100's compute-bound "
    "forward+backward runs' median (kpt.sim ATTENTION_BACKWARD_WORK; it was FlashAttention-2's "
    "FLOP count, 2.5). fp32 runs CUTLASS's memory-efficient kernel, which the H100 runs never "
    "timed: its own table (`[efficiency.attention.fp32]`: products, softmax, start-up, and the "
    "backward's multiples of each) is fitted on an H200 sweep of 96 other fp32 shapes "
    "(`fit_fused_sweep.py --fit`, median 6.0% forwards, 5.4% backwards); its rows here were -32% "
    "to -49%. The smallest forwards (5-7 us of kernel) are dearer by the class's start-up, "
    "fitted on H100 event timings of the same shapes (8.8 us there).",
    "- The RNN class is built from the matmul and elementwise classes (nothing fitted); GRU "
    "(3 gates) and Elman (1) layers are priced as LSTM's (4) with their own gates: cuDNN runs "
    "them the same way, a recurrent GEMM and the cell's kernel each step (the profiles' kernel "
    "names). cuDNN's "
    "per-step GEMM (cutlass_80_tensorop_s1688gemm_64x64) computes whole 64-row tiles: a batch "
    "under 64 costs a full tile (kpt.sim RNN_TILE_ROWS, read off the kernel's name; 18 other "
    "LSTM layers of `h200_fused_sweep.json`: median 5.9%, `fit_fused_sweep.py`). The four LSTM "
    "rows were -7% to -37%. What runs between a layer's kernels and a stack's overlap (the "
    "profile's [rnn] table, fitted on an H100 stack sweep timed alone on the GPU) are left out "
    "of this table, which compares kernel sums; Elman layers at most 256 wide run one persistent "
    "kernel a direction ([rnn] persistent_*, fitted on the H100's RNN sweep).",
    "- Multi-tensor kernels (foreach, fused optimizers) run a block per 65536-element chunk, so "
    "an optimizer over many small tensors launches a few dozen blocks: the class "
    "`multi_tensor` streams at blocks x one block's rate (47 GB/s) up to 0.84 of elementwise's "
    "bandwidth, both fitted on a sweep of single foreach launches (`fit_multi_tensor.py`), not "
    "on these steps; fused Adam(W) chunks at CUDA's depth 4 (its steps are passed beside the "
    "lists). The many-small-tensor steps were 47-59% under; now between -21% and +13%.",
    "- Vocabulary heads (GPT-2's 50257, BERT's 30522 tokens; the table above) have rows no "
    "16-byte load reads, so cuBLAS runs align-1/2 kernels, priced at the profile's one "
    "`misaligned_tflops`, fitted on the H100's align-1 GEMMs. The weight gradient (`nt`) reads "
    "the output gradient transposed, which only strides show: the executor passes them as the "
    "matmul shape's fourth entry (it was priced as an aligned GEMM before). No H100 run timed "
    "align-2 kernels, nor the align-1 rate by K; `measure_misaligned_gemm.py` is the sweep "
    "that would fit both.",
    "- Host time the engine cannot see: the client now counts the ops that launch nothing "
    "(views, allocations) and the next launch tells the daemon, which charges `host_op_us` "
    "each (fitted on the view, transpose and allocation programs). cuDNN's own host set-up "
    "for convolutions and batch norm is charged by class (the notes below); module calls are "
    "still unseen but through the model factor.",
    "- Model-shaped code costs the host more per launch than a hot loop: the [host] table is "
    "the loops' figures times one factor fitted on the demo GPT's steps of r5 and r6 (1.48, "
    "calibration/HOST_MODEL.md). cuDNN's RNN backward issues its data and weight gradients "
    "every time step, so a backward RNN launch has its own host figure per step "
    "(rnn_backward_step_us: 38 us in the loops against the forward's 5).",
    "- The host is not a fixed quantity on these machines: the same five steps, measured on "
    "lent H200s (tables above), ran 1.4-2.3x apart in wall time while their device time "
    "stayed within 5 %. A host table fitted in one run cannot meet a 10 % wall target in "
    "every run; the device-busy column is the part a profile can promise. Within a run the "
    "host's speed also moves, often between two levels (the probes beside r7-r10's steps), so "
    "from r11 on each of 30 reps of a step is paired with a short probe right before it and "
    "predicted at that rep's speed: r11 and r12 meet both targets (r12's process pinned to "
    "one core, whose steps varied least); r15 and r16 meet the worst and miss the median by a "
    "point; r13 and r14, on another machine, miss both, every "
    "step 13-29 % under: their probes read that host about as fast as the fitted one "
    "(0.64-1.23), and the steps ran about 1.2x longer than that speed gives. The demo GPT's "
    "steps, timed after the five in every run, do not single that host out: at the profile's "
    "model factor they are priced 0.83-0.93x on r13 and r14 but 0.48-0.65x on r7, r8 and r11, "
    "whose steps land at medians of 8.2-11.5 %. Fitting the factor on every run's demo GPT steps, "
    "each at its run's host speed (1.50 -> 1.94), put r13 and r14 within 8 % and every other "
    "run further off (r11 13.8 %, r1-r10 and the H100 runs worse), so it is not in.",
    "- The CNN's device time by kernel family (`python step_breakdown.py cnn_bn`, against the "
    "profiler's top 25 kernels): batch norm 1.13 ms predicted against 1.08 measured "
    "(kpt.sim's batchnorm class: cuDNN's NCHW kernels stream each channel in one block, fitted "
    "on the H100's conv / batch-norm sweep, calibration/REPORT.md); the convolutions' forward "
    "and backward 2.27 ms against 2.12 with their NCHW / NHWC transposes (the backward priced "
    "as its data and weight gradients, conv's backward_work fitted on that sweep). Its host: "
    "cuDNN's backward calls take [host.backward_class_us] (conv 167 us, batchnorm 196 us, "
    "fitted on r9's to r11's loops of a convolution's and a batch norm's forward with its "
    "backward, one autograd.grad call each: each figure also holds that call's engine start, "
    "which a step's one backward shares among its nodes; r11's stack of four such layers "
    "under one backward puts that start at 12 us, HOST_MODEL.md). At each run's host speed "
    "the CNN lands within 8 % on the four runs whose steps have their own host probe "
    "(r7-r10), and 26-39 % over on r4-r6, whose speed was timed after all five steps "
    "(0.94-1.12): the host is faster at a run's start, where the CNN step runs (its own "
    "probes read 0.69-0.72, h200_predictions.json). On r11's host, twice as fast as the "
    "fitted one (paired speeds 0.39-0.46), it is 18 % under, and it is under on every paired "
    "H100 run too (3-25 %): its host time shows more on a fast host than the model gives.",
    "",
]


# The vocabulary heads of the whole steps: (tokens, vocabulary, width), and each cuBLAS kernel
# form's GEMM as kpt_sim's executor shapes it, (M, N, K, aligned): the forward (`tn`), the
# input gradient (`nn`), the weight gradient (`nt`, the output gradient read transposed).
HEADS = {"gpt2_bf16": (2048, 50257, 768), "bert_base": (2048, 30522, 768),
         "gpt2_infer": (1024, 50257, 768)}  # fmt: skip
HEAD_FORMS = {"tn": lambda t, v, d: (t, v, d, 16), "nn": lambda t, v, d: (t, d, v, 16),
              "nt": lambda t, v, d: (v, d, t, 2 * (v & -v))}  # fmt: skip


def vocab_heads(profile=None) -> list[dict]:
    """Each head GEMM's kernel on the H200 (h200_whole_steps.json, by its cuBLAS name) against
    what a profile (h200's by default) prices that GEMM at (kpt.sim.op_time, launch included)."""
    from kpt.sim import load_profile, op_time

    profile, steps, rows = profile or load_profile("h200"), measured_steps(""), []
    for workload, (tokens, vocab, width) in HEADS.items():
        for kernel in steps[workload]["kernels"]["top"]:
            found = re.search(r"_(tn|nn|nt)_(align\d)", kernel["name"])
            if found is None or kernel["count"] != 1:
                continue
            form, align = found.groups()
            m, n, k, _ = shape = HEAD_FORMS[form](tokens, vocab, width)
            flops = 2.0 * m * n * k
            moved = 2.0 * (m * k + k * n + m * n)
            predicted = op_time(profile, "matmul", flops, moved, "bf16", shape)
            rows.append({"kernel": f"{workload} {form} {align} ({m} x {n} x {k})",
                         "measured_s": kernel["us"] * 1e-6, "tflops": flops / kernel["us"] / 1e6,
                         "predicted_s": predicted})  # fmt: skip
    return rows


def measured_steps(suffix: str, chip: str = "h200") -> dict:
    return json.loads((HERE / f"{chip}_whole_steps{suffix}.json").read_text())["steps"]


def step_host_speed(step: dict, suffix: str) -> tuple[float, str]:
    """(host speed, where it was measured) for one run's whole step: its own probe (the eager
    loops right before and after it) where the run has one, else the run's host programs
    (timed after all five steps)."""
    probe = step.get("host_probe")
    if probe:
        return host_speed(probe["before"] + probe["after"]), "probe"
    return host_speed(run_programs(suffix)["eager"]), "programs"


def run_prediction(
    trace: dict, step: dict, suffix: str, tmp: Path, hbm_gbps: float = H200_HBM_GBPS
) -> dict:
    """One run's wall for a step and its prediction at that run's host speed. A run with
    paired reps (a short probe right before each step, from r11 on) is predicted rep by rep at
    the speed that rep's probe saw, and both sides are the medians over the reps; an earlier
    run is predicted at one speed (step_host_speed) against its median wall."""
    paired = step.get("paired")
    if not paired:
        speed, where = step_host_speed(step, suffix)
        predicted, _ = replay_s(trace, host_scaled(speed, tmp, hbm_gbps))
        return {"wall_s": step["median_s"], "host_speed": speed, "measured_by": where,
                "predicted_s": predicted}  # fmt: skip
    # Speeds to a hundredth: one replay per distinct speed, well inside the probes' noise.
    speeds = [round(host_speed(rep["probe"]), 2) for rep in paired]
    predicted = {s: replay_s(trace, host_scaled(s, tmp, hbm_gbps))[0] for s in set(speeds)}
    return {"wall_s": statistics.median(rep["wall_s"] for rep in paired),
            "host_speed": statistics.median(speeds), "measured_by": "paired",
            "host_speeds": (min(speeds), max(speeds)),
            "predicted_s": statistics.median(predicted[s] for s in speeds)}  # fmt: skip


def held_apart(
    trace: dict,
    step: dict,
    predicted: dict,
    tmp: Path,
    device_s: float,
    hbm_gbps: float = H200_HBM_GBPS,
) -> dict:
    """A run with held reps: their host and GPU times apart, and kpt_sim's (held_steps.py): the
    host at the run's paired host speed, the device alone (device_s, the same for every run of
    a chip)."""
    measured = measured_apart(step)
    if measured is None:
        return {}
    host = host_scaled(round(predicted["host_speed"], 2), tmp, hbm_gbps)
    return {"held": {"measured": measured, "predicted": predicted_apart(trace, host, device_s)}}


@functools.cache
def no_host(tmp: Path, hbm_gbps: float = H200_HBM_GBPS) -> str:
    """The h200 profile without host time; at another datasheet HBM figure, that chip's (h100-sxm's
    device figures under H100_HBM_GBPS)."""
    profile = profile_with(NO_HOST, tmp)
    return profile if hbm_gbps == H200_HBM_GBPS else no_host_profile(profile, tmp, hbm_gbps)


@functools.cache
def host_scaled(speed: float, tmp: Path, hbm_gbps: float = H200_HBM_GBPS) -> str:
    """The h200 profile for a host `speed` times slower (kpt-sim profile derive --host-scale);
    with another datasheet HBM figure, that chip (H100_HBM_GBPS: h100-sxm's device figures, as
    h200 was derived from them, under h200's [host] table)."""
    from kpt.sim._derive import Datasheet, write_derived

    sheet = Datasheet(hbm_bandwidth_gbps=hbm_gbps, host_scale=speed)
    return str(write_derived("h200", sheet, tmp / f"h200-hbm{hbm_gbps:.0f}-x{speed:.4f}.toml"))


def whole_steps(tmp: Path) -> list[dict]:
    runs = {label: measured_steps(suffix) for label, suffix, _ in RUNS}
    measured = next(runs[label] for label, suffix, _ in RUNS if not suffix)  # the fitted run
    # The profile without its [host] table: one host figure per launch (host_issue_us, fitted
    # on an H100 machine's MLP steps), as before the host model.
    flat = tmp / "h200-flat-host.toml"
    flat.write_text(strip_host(PROFILE.read_text()))
    rows = []
    for name in WORKLOADS:
        w = build(name, "kpt_sim")  # the inference forward under inference_mode, as on the GPU
        trace = record(w.step, tmp / f"{name}.json")
        wall, _ = replay_s(trace, "h200")
        flat_wall, _ = replay_s(trace, str(flat))
        alone, _ = replay_s(trace, no_host(tmp))
        # Device busy against the profiler's kernel sum: the kernels alone, without their gaps.
        _, busy = replay_s(trace, kernels_only(no_host(tmp)))
        at_speed = {}
        for label, suffix, _ in RUNS:
            step = runs[label][name]
            predicted = run_prediction(trace, step, suffix, tmp)
            at_speed[label] = {**predicted, **held_apart(trace, step, predicted, tmp, alone)}
        h100_alone, _ = replay_s(trace, no_host(tmp, H100_HBM_GBPS))
        on_h100 = {}
        for label, suffix in H100_RUNS:
            step = measured_steps(suffix, "h100")[name]
            predicted = run_prediction(trace, step, suffix, tmp, H100_HBM_GBPS)
            on_h100[label] = {"busy_s": step["kernels"]["device_seconds"], **predicted,
                              **held_apart(trace, step, predicted, tmp, h100_alone,
                                           H100_HBM_GBPS)}  # fmt: skip
        real = measured[name]
        rows.append({"workload": name, "description": w.description,
                     "launches": len(launches(trace)), "kernels": real["kernels"]["count"],
                     "measured_s": real["median_s"], "predicted_s": wall,
                     "flat_host_s": flat_wall,
                     "measured_busy_s": real["kernels"]["device_seconds"],
                     "predicted_busy_s": busy,
                     "runs": {label: {"busy_s": run[name]["kernels"]["device_seconds"],
                                      **at_speed[label]}
                              for label, run in runs.items()},
                     "h100_predicted_busy_s": replay_s(trace, kernels_only(H100))[1],
                     "h100_runs": on_h100})  # fmt: skip
        print(rows[-1], flush=True)
        del w
    return rows


def _error_line(rows: list[dict], measured: str = "measured_s", predicted: str = "predicted_s"):
    errors = sorted(abs(r[predicted] / r[measured] - 1) for r in rows)
    return (f"median |error| **{statistics.median(errors):.1%}**, worst **{errors[-1]:.1%}** "
            f"over {len(errors)}")  # fmt: skip


def across_runs(steps: list[dict]) -> list[str]:
    """The same predictions against every run's walls: how far the host moves between runs."""
    labels = [label for label, _, _ in RUNS]
    lines = ["## Whole steps in every H200 run (wall ms measured; the prediction's error)", "",
             *(f"- {label}: {where}" for label, _, where in RUNS), "",
             "| workload | predicted | " + " | ".join(labels) + " | device busy, all runs |",
             "|---|---|" + "---|" * len(labels) + "---|"]  # fmt: skip
    for r in steps:
        cells = [f"{run['wall_s'] * 1e3:.2f} ({r['predicted_s'] / run['wall_s'] - 1:+.0%})"
                 for run in r["runs"].values()]  # fmt: skip
        busy = [run["busy_s"] * 1e3 for run in r["runs"].values()]
        lines.append(f"| {r['workload']} | {r['predicted_s'] * 1e3:.2f} | " + " | ".join(cells)
                     + f" | {min(busy):.2f}-{max(busy):.2f} |")  # fmt: skip
    lines.append("")
    for label in labels:
        rows = [{"measured_s": r["runs"][label]["wall_s"], "predicted_s": r["predicted_s"]}
                for r in steps]  # fmt: skip
        lines.append(f"- {label}: wall {_error_line(rows)}")
    return [*lines, ""]


def at_host_speed(steps: list[dict]) -> list[str]:
    """The same steps predicted for each run's host: the profile derived at its host speed."""
    labels = [label for label, _, _ in RUNS]
    speeds = []
    for label in labels:
        runs = [r["runs"][label] for r in steps]
        if all("host_speeds" in run for run in runs):  # paired reps: the range they saw
            speeds.append(f"{_speed_range(steps, 'runs', label)} (paired)")
            continue
        found = {f"{run['host_speed']:.2f}" for run in runs}
        where = {run["measured_by"] for run in runs}
        speeds.append("/".join(sorted(found)) + (" (probes)" if "probe" in where else ""))
    lines = [
        "## Whole steps in every H200 run, at that run's host speed", "",
        "The `[host]` table holds the host time per launch of the machine it was fitted on "
        "(r5 and r6). The lent machines' hosts are not that one: each run's eager op loops "
        "(`host_programs.eager_ops`, timed after the five steps; from r7 on right before and "
        "after each step, `host_probe`) give its host time per launch over the fitted runs' "
        "(the host speed, median over the loops), and each step is predicted on the h200 "
        "profile derived for that host (`kpt-sim profile derive --from h200 --hbm-bandwidth "
        "4800 --host-scale SPEED`). From r11 on, each of 30 paired reps times a short probe "
        "right before its step, each rep is predicted at its own probe's speed, and the table "
        "compares the medians (`paired`). Nothing is fitted on the steps.", "",
        "| workload | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
        "| host speed | " + " | ".join(speeds) + " |",
    ]  # fmt: skip
    for r in steps:
        cells = [f"{run['predicted_s'] * 1e3:.2f} / {run['wall_s'] * 1e3:.2f} "
                 f"({run['predicted_s'] / run['wall_s'] - 1:+.0%})"
                 for run in r["runs"].values()]  # fmt: skip
        lines.append(f"| {r['workload']} (predicted / measured ms) | " + " | ".join(cells) + " |")
    lines.append("")
    for label in labels:
        rows = [{"measured_s": r["runs"][label]["wall_s"],
                 "predicted_s": r["runs"][label]["predicted_s"]} for r in steps]  # fmt: skip
        lines.append(f"- {label}: wall {_error_line(rows)}")
    return [*lines, ""]


def on_h100(steps: list[dict]) -> list[str]:
    """The H100 runs' steps: h100-sxm's device figures under h200's [host] table, at each
    rep's host speed."""
    labels = [label for label, _ in H100_RUNS]
    lines = [
        "## Whole steps on an H100, at each rep's host speed", "",
        "Fifteen runs of `measure_h200_steps.py` that lent H100 machines ran: two on each of "
        "five (`h100_whole_steps_a.json` to `_j`), three on a sixth (`_k` to `_m`) and two on a "
        "machine started later that session (`_n`, `_o`); NVIDIA H100 80GB HBM3, 16-core "
        "hosts; paired reps as r11's. Each rep is predicted on h100-sxm's device figures "
        "(`kpt-sim profile derive --from h200 --hbm-bandwidth 3350`: back to the H100 "
        "datasheet, which h200 was derived from) under h200's `[host]` table at that rep's host "
        "speed. Nothing is fitted on these runs; the `[host]` table was fitted on an H200 "
        "machine's host programs.", "",
        "| workload | " + " | ".join(f"{label} (predicted / measured ms)" for label in labels)
        + " | device busy, predicted / measured ms |",
        "|---|" + "---|" * len(labels) + "---|",
    ]  # fmt: skip
    for r in steps:
        runs = r["h100_runs"].values()
        cells = [f"{run['predicted_s'] * 1e3:.2f} / {run['wall_s'] * 1e3:.2f} "
                 f"({run['predicted_s'] / run['wall_s'] - 1:+.0%})" for run in runs]  # fmt: skip
        busy = statistics.median(run["busy_s"] for run in runs)
        lines.append(f"| {r['workload']} | " + " | ".join(cells) + f" | "
                     f"{r['h100_predicted_busy_s'] * 1e3:.2f} / {busy * 1e3:.2f} "
                     f"({r['h100_predicted_busy_s'] / busy - 1:+.0%}) |")  # fmt: skip
    lines += [
        "",
        *(f"- {label} (host speeds {_speed_range(steps, 'h100_runs', label)}): wall "
          f"{_error_line([r['h100_runs'][label] for r in steps], 'wall_s')}"
          for label in labels),
        "",
    ]  # fmt: skip
    return lines


def _speed_range(steps: list[dict], key: str, label: str) -> str:
    runs = [r[key][label] for r in steps]
    return f"{min(run['host_speeds'][0] for run in runs):.2f}-" + (
        f"{max(run['host_speeds'][1] for run in runs):.2f}")  # fmt: skip


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def report(steps: list[dict], kernels: dict[str, list[dict]], alone: dict[str, list]) -> str:
    lines = [
        "# kpt-sim fidelity against a real H200 (issue 12)", "",
        "Produced by `cd simulator/calibration && python predict_h200_steps.py` from an H200 run "
        "(`measure_h200_steps.py`: `h200_whole_steps.json`, `h200_fused_kernels.json`, "
        "`h200_host_programs.json`; NVIDIA H200, torch 2.11.0+cu130, driver 580.159.04). "
        "Each workload runs unchanged through the public torch API on kpt_sim (timing only); one "
        "call's ops are replayed on the shipped `h200` profile. The profile's device side is "
        "derived from the H100 calibration and the H200 datasheet (`kpt-sim profile derive`); "
        "its `[host]` table (host time per launch source) was fitted on the host programs of "
        "this run (r5) and the one right after it (r6) only: hot loops, then one factor for "
        "model-shaped code fitted on the demo's small GPT steps (`host_model_fit.py`, "
        "`calibration/HOST_MODEL.md`). None of the five models is among them; nothing was "
        "refitted on the data below.", "",
        "## Whole steps (target: median |error| <= 10 %, worst <= 25 %, host time included)", "",
        "| workload | kpt_sim launches / GPU kernels | measured wall | predicted wall | error | "
        "one host figure per launch | measured device busy | predicted device busy | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in steps:
        lines.append(
            f"| {r['workload']}: {r['description']} | {r['launches']} / {r['kernels']} | "
            f"{_ms(r['measured_s'])} | {_ms(r['predicted_s'])} | "
            f"{r['predicted_s'] / r['measured_s'] - 1:+.1%} | "
            f"{r['flat_host_s'] / r['measured_s'] - 1:+.1%} | {_ms(r['measured_busy_s'])} | "
            f"{_ms(r['predicted_busy_s'])} | "
            f"{r['predicted_busy_s'] / r['measured_busy_s'] - 1:+.1%} |"
        )  # fmt: skip
    lines += ["", f"Wall: {_error_line(steps)}; with one host figure per launch "
              f"(`host_issue_us`, the profile without `[host]`): "
              f"{_error_line(steps, 'measured_s', 'flat_host_s')}. Device busy: "
              f"{_error_line(steps, 'measured_busy_s', 'predicted_busy_s')}.", ""]  # fmt: skip
    lines += across_runs(steps)
    lines += at_host_speed(steps)
    lines += on_h100(steps)
    lines += held_section(steps, [(label, "runs", "H200") for label, _, _ in RUNS]
                          + [(label, "h100_runs", "H100") for label, _ in H100_RUNS])  # fmt: skip
    lines += fused_section(alone)
    titles = {"sdpa": "Fused attention (F.scaled_dot_product_attention; measured: the "
                      "profiler's forward kernel, and its kernel sum for forward+backward)",
              "rnn": "Fused RNN layers (cuDNN; measured: the profiler's kernel sum)",
              "optimizers": "Optimizer steps (measured: the profiler's kernel sum)",
              "heads": "Vocabulary-head GEMMs of the whole steps (measured: the step's kernel "
                       "by its cuBLAS name; TFLOP/s as measured)"}  # fmt: skip
    for key, rows in kernels.items():
        lines += [f"## {titles[key]}", "", "| kernel | measured | predicted | error |",
                  "|---|---|---|---|"]  # fmt: skip
        for r in rows:
            rate = f" ({r['tflops']:.0f} TFLOP/s)" if "tflops" in r else ""
            lines.append(f"| {r['kernel']} | {r['measured_s'] * 1e6:.1f} us{rate} | "
                         f"{r['predicted_s'] * 1e6:.1f} us | "
                         f"{r['predicted_s'] / r['measured_s'] - 1:+.1%} |")  # fmt: skip
        lines += ["", f"{_error_line(rows)}.", ""]
    lines += NOTES
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print, write nothing")
    args = ap.parse_args()
    import kpt.adapters.sim  # noqa: F401  (registers the kpt_sim device)

    tmp = Path(tempfile.mkdtemp(prefix="kpt-h200-steps-"))
    steps = whole_steps(tmp)
    h200, h100 = no_host(tmp), no_host(tmp, H100_HBM_GBPS)
    kernels = {"sdpa": sdpa(tmp, h200), "rnn": rnn(tmp, h200), "optimizers": optimizers(tmp, h200),
               "heads": vocab_heads()}  # fmt: skip
    alone = {label: [row for fn in (sdpa, rnn, optimizers)
                     for row in fn(tmp, h100, HERE / f"h100_fused_kernels_{label}.json")]
             for label in GPU_ALONE_RUNS}  # fmt: skip
    text = report(steps, kernels, alone)
    print(text)
    if not args.dry_run:
        REPORT.write_text(text)
        (HERE / "h200_predictions.json").write_text(
            json.dumps({"steps": steps, **kernels}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
