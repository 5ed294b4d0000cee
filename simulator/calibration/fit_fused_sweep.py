"""Fit fp32 attention, the memory-efficient kernel, to its H200 sweep; report the rest of it.

fp32 F.scaled_dot_product_attention runs CUTLASS's memory-efficient kernel on CUDA, not flash
attention; the H100 calibration never timed it, so the attention class (fitted on bf16 and
fp16 flash kernels) priced it at about twice its speed. Reads h200_fused_sweep.json
(`measure_fused_sweep.py`: 96 fp32 shapes, none of them REPORT.md's), runs each through the
public torch API on kpt_sim (timing only) to get the adapter's own op costs, and prints each
kernel's time on the shipped h200 profile against the profiler's. With --fit, least squares on
log(predicted / measured) of the fp32 table's numbers, to write into h100-sxm's
[efficiency.attention.fp32] (`derive_h200.py` then gives h200 the same):

- forwards: class_tflops (its compute rate), score_gps (its softmax rate per score) and
  compute_x_half (its start-up);
- backwards, with those fixed: backward_work and backward_score_work (the backward's
  products and softmax, each in forwards').

Then, on the same profile, nothing fitted on them: the sweep's small bf16 attention kernels
(flash attention's class, calibrated on the H100), its LSTM layers and the GRU and Elman layers
of h200_rnn_sweep.json (measure_rnn_sweep.py), where it was measured (the `rnn` class), and
torch's fused transformer inference ops of h200_encoder_sweep.json (measure_encoder_sweep.py),
where it was measured (the `encoder` class); the same two sweeps' H100 runs (h100_*) on
h100-sxm; and the stacked RNN layers of h100_rnn_stack_sweep.json (measure_rnn_stack_sweep.py)
timed alone on the GPU, against kpt_sim's layers in series.

    python simulator/calibration/fit_fused_sweep.py [--fit]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("KPT_SIM_NUMERICS", "0")  # costs only: the values are not needed

import numpy as np
from measure_h200_steps import sdpa_calls
from scipy.optimize import least_squares
from step_traces import record

from kpt.sim import load_profile
from kpt.sim._cost import _RATES, op_timing
from kpt.sim._cost_composite import rnn_timing

HERE = Path(__file__).resolve().parent
SWEEP = HERE / "h200_fused_sweep.json"
# The RNN and encoder sweeps, by chip: (chip, file prefix, profile). The H100's ran on a lent
# H100 with the same scripts; neither chip's is fitted on.
CHIPS = (("H200", "h200", "h200"), ("H100", "h100", "h100-sxm"))
ENCODER_PARTS = {"encoder layer": 0, "attention": 1, "attention with weights": 2}
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}  # the cell's gates: W_ih's rows / H
# cuDNN runs an Elman layer this wide or narrower as one persistent kernel for the whole sequence
# (RNN_blockPersist_fp_RNN<..., 256> in h200_rnn_sweep.json), which the `rnn` class does not
# model: reported as a group of its own.
CUDNN_PERSISTENT_HIDDEN = 256
FORWARD_KERNELS = ("fprop", "cutlassF")
BACKWARD_KERNELS = ("bprop", "cutlassB", "dot_do_o", "convert_dq")


def with_fp32_attention(profile, **fields):
    """`profile` with attention's fp32 table given `fields` (Efficiency's names, SI units)."""
    eff = profile.efficiency_for("attention")
    own = dataclasses.replace(eff.for_dtype("fp32"), by_dtype={}, **fields)
    _RATES.clear()  # rates are cached per profile and class
    table = dataclasses.replace(eff, by_dtype={**eff.by_dtype, "fp32": own})
    return dataclasses.replace(profile, efficiency={**profile.efficiency, "attention": table})


def kernel_us(part: dict, names: tuple[str, ...]) -> float:
    return sum(k["us"] for name, k in part["kernels"].items() if any(n in name for n in names))


def sweep_rows(dtype: str) -> list[dict]:
    """The sweep's configurations of `dtype`, each with its measured forward and backward
    kernel time and the two attention launches kpt_sim issues for it."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in json.loads(SWEEP.read_text())["sdpa"]:
            if r["dtype"] != dtype:
                continue
            shape = (r["batch"], r["heads"], r["seq"], r["head_dim"])
            _, fwd_bwd = sdpa_calls(*shape, r["causal"], dtype, "kpt_sim")
            ops = [o for o in record(fwd_bwd, Path(tmp) / "sdpa.json")["ops"]
                   if o.get("class") == "attention"]  # fmt: skip
            rows.append(
                {
                    "label": f"b{shape[0]} h{shape[1]} s{shape[2]} d{shape[3]}"
                    + (" causal" if r["causal"] else ""),
                    "forward": ops[0],
                    "backward": ops[1],
                    "forward_us": kernel_us(r["forward"], FORWARD_KERNELS),
                    "backward_us": kernel_us(r["forward_backward"], BACKWARD_KERNELS),
                }
            )
    return rows


def rnn_errors(profile, prefix: str = "h200") -> list[tuple[str, str, float, float]]:
    """The fused sweep's LSTM layers (the H200's) and, where it was measured, the RNN sweep's
    GRU and Elman layers (measure_rnn_sweep.py, `{prefix}_rnn_sweep.json`): (mode, label,
    measured, predicted forward+backward us), the `rnn` class's cost of one layer each way with
    the cell's gates (nothing fitted on them)."""
    layers = ([{"mode": "LSTM", **r} for r in json.loads(SWEEP.read_text())["lstm"]]
              if prefix == "h200" else [])  # fmt: skip
    rnn_sweep = HERE / f"{prefix}_rnn_sweep.json"
    if rnn_sweep.exists():
        layers += [{**r, "forward_backward": r} for r in json.loads(rnn_sweep.read_text())["rnn"]
                   if r["part"] == "forward_backward"]  # fmt: skip
    rows = []
    for r in layers:
        shape = (r["seq"], r["batch"], r["input"], r["hidden"], GATES[r["mode"]])
        both = r.get("bidirectional", False)
        directions = (2,) if both else ()
        predicted = sum(rnn_timing(profile, "fp32", (*shape, b, *directions)).duration
                        for b in (0, 1))  # fmt: skip
        mode = r["mode"] + (" bidirectional" if both else "")
        if GATES[r["mode"]] == 1 and r["hidden"] <= CUDNN_PERSISTENT_HIDDEN:
            mode += f" {r['hidden']} wide (cuDNN's persistent kernel)"
        rows.append((mode, f"{mode} seq {r['seq']} batch {r['batch']} "
                     f"{r['input']}->{r['hidden']}", r["forward_backward"]["device_us"],
                     predicted * 1e6))  # fmt: skip
    return rows


def encoder_errors(profile, prefix: str = "h200") -> list[tuple[str, str, float, float]]:
    """The encoder sweep's fused transformer ops (measure_encoder_sweep.py,
    `{prefix}_encoder_sweep.json`), where it was measured: (part, label, measured, predicted
    us), the `encoder` class less the idle-launch latency the profiler's kernel sum does not
    hold (nothing fitted on them)."""
    sweep = HERE / f"{prefix}_encoder_sweep.json"
    if not sweep.exists():
        return []
    rows = []
    for r in json.loads(sweep.read_text())["encoder"]:
        shape = (r["batch"], r["seq"], r["seq"], r["embed"], r["heads"], r["ffn"],
                 ENCODER_PARTS[r["part"]])  # fmt: skip
        op = {"class": "encoder", "flops": 0, "bytes": 0, "dtype": r["dtype"], "shape": shape}
        label = (f"{r['part']} {r['dtype']} batch {r['batch']} seq {r['seq']} "
                 f"{r['embed']}/{r['heads']}/{r['ffn']}")  # fmt: skip
        rows.append((r["part"], label, r["device_us"], predicted_us(profile, op)))
    return rows


def stack_rows(profile, sweep: str = "h100_rnn_stack_sweep") -> list[tuple]:
    """The stacked layers of measure_rnn_stack_sweep.py (`h100_rnn_stack_sweep.json`, fitted on
    by --fit-rnn) or measure_rnn_stack_heldout.py (`{chip}_rnn_stack_heldout.json`, not):
    (label, the profiler's kernel sum, the GPU alone, the stack's one-layer GPU alone, kpt_sim's
    stack, us each)."""
    path = HERE / f"{sweep}.json"
    if not path.exists():
        return []
    stacks = json.loads(path.read_text())["stacks"]
    one = {_stack_shape(r): r for r in stacks if r["layers"] == 1}
    rows = []
    for r in stacks:
        label = (f"{r['mode']} x{r['layers']} seq {r['seq']} batch {r['batch']} "
                 f"{r['input']}->{r['hidden']} {r['part'].replace('_', '+')}")  # fmt: skip
        single = one[_stack_shape(r)]
        rows.append((label, r["kernels"]["device_seconds"] * 1e6, r["gpu_alone"]["seconds"] * 1e6,
                     single["gpu_alone"]["seconds"] * 1e6, stack_seconds(profile, r) * 1e6,
                     stack_seconds(profile, single) * 1e6))  # fmt: skip
    return rows


def bidirectional_rows(profile) -> list[tuple]:
    """The bidirectional layers of measure_rnn_bidirectional.py (`h100_rnn_bidirectional.json`;
    --fit-rnn fits direction_added on its single layers' ratio to one direction): stack_rows'
    fields, the reference being the same stack one way."""
    path = HERE / "h100_rnn_bidirectional.json"
    if not path.exists():
        return []
    layers = json.loads(path.read_text())["layers"]
    one = {(*_stack_shape(r), r["layers"]): r for r in layers if not r["bidirectional"]}
    rows = []
    for r in layers:
        if r["bidirectional"]:
            single = one[(*_stack_shape(r), r["layers"])]
            label = (f"{r['mode']} x{r['layers']} both ways seq {r['seq']} batch {r['batch']} "
                     f"{r['input']}->{r['hidden']} {r['part'].replace('_', '+')}")  # fmt: skip
            rows.append((label, r["kernels"]["device_seconds"] * 1e6,
                         r["gpu_alone"]["seconds"] * 1e6, single["gpu_alone"]["seconds"] * 1e6,
                         stack_seconds(profile, r) * 1e6,
                         stack_seconds(profile, single) * 1e6))  # fmt: skip
    return rows


def stack_seconds(profile, r: dict) -> float:
    """kpt_sim's time for a stack of a sweep: one launch per layer each way (the forward alone
    for a "forward" part), as torch issues them, each its share of the stack (the `rnn`
    class)."""
    directions = 2 if r.get("bidirectional") else 1
    widths = [r["input"]] + [r["hidden"] * directions] * (r["layers"] - 1)
    ways = (0, 1) if r["part"] == "forward_backward" else (0,)
    return sum(rnn_timing(profile, "fp32", (r["seq"], r["batch"], width, r["hidden"],
                                            GATES[r["mode"]], b, directions, r["layers"])).duration
               for width in widths for b in ways)  # fmt: skip


def fit_rnn(profile) -> None:
    """Fit the profile's [rnn] table on the stack sweep timed alone on the GPU, and print it:
    kernel_gap_us on the single layers (median |error| least), then stack_fixed_us and
    stack_added on the deeper stacks (least squares on the relative error of what each layer
    above the first adds)."""
    stacks = json.loads((HERE / "h100_rnn_stack_sweep.json").read_text())["stacks"]
    alone = {(*_stack_shape(r), r["layers"]): r["gpu_alone"]["seconds"] for r in stacks}
    single = [r for r in stacks if r["layers"] == 1]

    def one_layer(gap: float, r: dict) -> float:
        gapped = profile.rnn._replace(kernel_gap_s=gap)
        return stack_seconds(dataclasses.replace(profile, rnn=gapped), {**r, "layers": 1})

    gaps = np.arange(0.0, 5e-6, 1e-8)
    gap = min(gaps, key=lambda g: np.median([abs(one_layer(g, r) / alone[(*_stack_shape(r), 1)]
                                                 - 1) for r in single]))  # fmt: skip
    deep = [r for r in stacks if r["layers"] > 1]
    first = np.array([one_layer(gap, r) for r in deep])
    above = np.array([r["layers"] - 1 for r in deep], dtype=float)
    measured = np.array([alone[(*_stack_shape(r), r["layers"])] for r in deep])
    # measured = first + above * (fixed + added * first), each row weighted by 1 / measured
    terms = np.stack([above, above * first], axis=1) / measured[:, None]
    fixed, added = np.linalg.lstsq(terms, (measured - first) / measured, rcond=None)[0]
    print(persistent_fit())
    print(direction_fit(profile, gap))
    # A layer adds `fixed` forward and backward together: stack_fixed_us is each launch's half.
    print(
        f"[rnn] fitted on {len(single)} single layers and {len(deep)} stacks: kernel_gap_us = "
        f"{gap * 1e6:.3g}, stack_added = {added:.3g}, stack_fixed_us = {fixed / 2 * 1e6:.4g}"
    )


def persistent_fit() -> str:
    """[rnn]'s persistent kernel, fitted on the H100 RNN sweep's Elman layers at most
    CUDNN_PERSISTENT_HIDDEN wide: each way's kernel time (the profiler's) against the steps,
    least squares; the width from the kernel's name (RNN_blockPersist_fp_RNN<..., 256>)."""
    layers = json.loads((HERE / "h100_rnn_sweep.json").read_text())["rnn"]
    fields = [f"persistent_hidden = {CUDNN_PERSISTENT_HIDDEN}"]
    for way, prefix in (("fp", "persistent"), ("bp", "persistent_backward")):
        points = [(r["seq"], k["us"]) for r in layers if GATES[r["mode"]] == 1
                  and r["hidden"] <= CUDNN_PERSISTENT_HIDDEN
                  for name, k in r["kernels"].items() if f"blockPersist_{way}" in name]  # fmt: skip
        steps, us = np.array(points).T
        step, start = np.polyfit(steps, us, 1)
        fields += [f"{prefix}_start_us = {start:.4g}", f"{prefix}_step_us = {step:.4g}"]
    return f"[rnn] persistent kernel, fitted on {len(points)} H100 layers: " + ", ".join(fields)


def direction_fit(kernels, gap: float) -> str:
    """[rnn] direction_added, fitted on the bidirectional sweep's single layers timed alone on
    the GPU (h100_rnn_bidirectional.json): how much both directions take over one, against
    kpt_sim's one direction alone and its kernels' sum (least squares), so the kernels' own
    prices do not enter it."""
    layers = json.loads((HERE / "h100_rnn_bidirectional.json").read_text())["layers"]
    one = {_stack_shape(r): r for r in layers if not r["bidirectional"] and r["layers"] == 1}
    profile = dataclasses.replace(kernels, rnn=kernels.rnn._replace(kernel_gap_s=gap))
    kernels = dataclasses.replace(kernels, stream_gap_s=0.0)
    over, share = [], []
    for r in layers:
        if r["bidirectional"] and r["layers"] == 1:
            single = one[_stack_shape(r)]
            over.append(r["gpu_alone"]["seconds"] / single["gpu_alone"]["seconds"] - 1)
            share.append(stack_seconds(kernels, single) / stack_seconds(profile, single))
    added = float(np.dot(share, over) / np.dot(share, share))
    return f"[rnn] fitted on {len(over)} bidirectional layers: direction_added = {added:.3g}"


def _stack_shape(r: dict) -> tuple:
    return r["mode"], r["seq"], r["batch"], r["input"], r["hidden"], r["part"]


def print_stacks(rows, title: str, reference: str = "one layer") -> None:
    """The stack table and, per depth and part, how much a stack takes over its reference (one
    layer alone; the same stack one way) on the GPU and kpt_sim's errors."""
    print(f"| RNN stack, {title} | kernel sum us | GPU alone us | over {reference} | kpt_sim us "
          "| error vs GPU alone |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for label, summed, alone, one, predicted, _ in rows:
        print(f"| {label} | {summed:.1f} | {alone:.1f} | {alone / one:.2f}x | {predicted:.1f} | "
              f"{predicted / alone - 1:+.1%} |")  # fmt: skip
    for part in ("forward+backward", "forward"):
        for depth in (1, 2, 3):
            chosen = [r for r in rows if f" x{depth} " in r[0] and r[0].endswith(f" {part}")]
            if not chosen:
                continue
            over = [alone / one for _, _, alone, one, _, _ in chosen]
            errors = [predicted / alone - 1 for _, _, alone, _, predicted, _ in chosen]
            line = (f"{part}, stacks of {depth}: GPU alone {min(over):.2f}-{max(over):.2f}x "
                    f"{reference}'s; " + summary("kpt_sim", errors))  # fmt: skip
            if max(over) > 1:  # against its own reference: the overlap, not the kernels' prices
                ratios = [(p / p1) / (a / a1) - 1 for _, _, a, a1, p, p1 in chosen]
                line += f"; over {reference}, median |error| {np.median(np.abs(ratios)):.1%}"
            print(line)


def summary(name: str, errors) -> str:
    errors = np.abs(errors)
    return (f"{name}: {len(errors)} kernels, median |error| {np.median(errors):.1%}, "
            f"p90 {np.percentile(errors, 90):.1%}, worst {np.max(errors):.1%}")  # fmt: skip


def predicted_us(profile, op: dict) -> float:
    """One kernel's device time, less the latency an idle GPU's launch adds (the profiler's
    kernel time does not hold it)."""
    timing = op_timing(profile, op["class"], op["flops"], op["bytes"], op["dtype"],
                       tuple(op["shape"]))  # fmt: skip
    return (timing.duration - profile.launch_latency_s) * 1e6


def log_errors(profile, rows: list[dict], part: str) -> list[float]:
    return [np.log(predicted_us(profile, r[part]) / r[f"{part}_us"]) for r in rows]


def fit(profile, rows: list[dict]):
    def forward(x):
        tflops, score_gps, x_half = x
        fitted = with_fp32_attention(profile, class_flops=tflops * 1e12,
                                     score_rate=score_gps * 1e9, compute_x_half=x_half)  # fmt: skip
        return log_errors(fitted, rows, "forward")

    # The two rates trade against each other (a valley with local minima): start from a few
    # splits of the time between the products and the softmax, keep the best.
    starts = [[tflops, gps, 1e10] for tflops in (30.0, 60.0, 120.0)
              for gps in (100.0, 300.0, 3000.0)]  # fmt: skip
    bounds = ([1.0, 10.0, 0.0], [500.0, 1e5, 1e12])
    x = min((least_squares(forward, s, bounds=bounds) for s in starts), key=lambda f: f.cost).x
    fields = {"class_flops": x[0] * 1e12, "score_rate": x[1] * 1e9, "compute_x_half": x[2]}

    def backward(b):
        fitted = with_fp32_attention(profile, **fields, backward_work=b[0],
                                     backward_score_work=b[1])  # fmt: skip
        return log_errors(fitted, rows, "backward")

    work = least_squares(backward, [3.1, 3.1], bounds=([0.1, 0.1], [20.0, 20.0])).x
    print(f"[efficiency.attention.fp32]: class_tflops = {x[0]:.4g}, score_gps = {x[1]:.4g}, "
          f"compute_x_half = {x[2]:.4g}, backward_work = {work[0]:.4g}, "
          f"backward_score_work = {work[1]:.4g}")  # fmt: skip
    return with_fp32_attention(profile, **fields, backward_work=work[0],
                               backward_score_work=work[1])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="fit the fp32 table's numbers again")
    parser.add_argument(
        "--fit-rnn",
        action="store_true",
        help="fit h100-sxm's [rnn] table on the stack sweep; print it and stop",
    )
    args = parser.parse_args()
    if args.fit_rnn:  # on the shipped profile's kernels, without [rnn]'s gap and stack
        shipped = load_profile("h100-sxm")
        return fit_rnn(dataclasses.replace(shipped, rnn=shipped.rnn.kernels_only()))
    import kpt.adapters.sim  # noqa: F401  (registers kpt_sim)

    profile, rows = load_profile("h200"), sweep_rows("fp32")
    if args.fit:
        profile = fit(profile, rows)
    print("| fp32 attention | measured us | predicted us | error |")
    print("|---|---|---|---|")
    for part in ("forward", "backward"):
        errors = np.expm1(log_errors(profile, rows, part))
        for r, e in zip(rows, errors):
            print(f"| {part} {r['label']} | {r[f'{part}_us']:.1f} | "
                  f"{predicted_us(profile, r[part]):.1f} | {e:+.1%} |")  # fmt: skip
        print(summary(f"fp32 {part}", errors))
    small = sweep_rows("bf16")  # flash attention's class, as calibrated on the H100
    for part in ("forward", "backward"):
        errors = np.expm1(log_errors(profile, small, part))
        print(
            summary(f"bf16 {part} (not fitted on)", errors) + f", median {np.median(errors):+.1%}"
        )
    for chip, prefix, name in CHIPS:
        on_chip = (profile if prefix == "h200" else load_profile(name)).kernels_only()
        print_fused_ops(chip, rnn_errors(on_chip, prefix), encoder_errors(on_chip, prefix))
    for sweep, title in (("h100_rnn_stack_sweep", "H100, fitted on (--fit-rnn)"),
                         ("h100_rnn_stack_heldout", "H100, not fitted on"),
                         ("h200_rnn_stack_heldout", "H200, not fitted on")):  # fmt: skip
        stacks = stack_rows(load_profile("h200" if sweep.startswith("h200") else "h100-sxm"), sweep)
        if stacks:
            print_stacks(stacks, title)
    both = bidirectional_rows(load_profile("h100-sxm"))
    if both:
        print_stacks(both, "both ways, H100 (direction_added fitted on the single layers)",
                     "one way")  # fmt: skip


def print_fused_ops(chip: str, layers: list, encoders: list) -> None:
    """One chip's RNN layers and fused transformer ops: the rows, then a summary per group."""
    if layers:
        print(f"| RNN layer, forward+backward, {chip} | measured us | predicted us | error |")
        print("|---|---|---|---|")
        print_rows(layers)
        kinds = dict.fromkeys(k for k, _, _, _ in layers)
        # [rnn]'s persistent kernel is fitted on the H100's (--fit-rnn): not on the H200's
        fitted = {kind: chip == "H100" and "persistent" in kind for kind in kinds}
        print_summaries(layers, {f"{chip} {kind}": lambda k, _, kind=kind: k == kind
                                 for kind in kinds}, fitted)  # fmt: skip
    if encoders:
        print(f"| fused transformer op, {chip} | measured us | predicted us | error |")
        print("|---|---|---|---|")
        print_rows(encoders)
        print_summaries(encoders, {
            **{f"{chip} {part}": lambda k, _, part=part: k == part for part in ENCODER_PARTS},
            f"{chip} bf16": lambda _, label: " bf16 " in label,
            f"{chip} fp32 at batch 1": lambda _, label: " fp32 batch 1 " in label,
            f"{chip} fp32 from batch 8": lambda _, label: " fp32 " in label
            and " batch 1 " not in label,
            f"{chip} all": lambda _, label: True,
        })  # fmt: skip


def print_rows(rows) -> None:
    for _, label, measured, predicted in rows:
        print(f"| {label} | {measured:.1f} | {predicted:.1f} | {predicted / measured - 1:+.1%} |")


def print_summaries(rows, groups: dict, fitted: dict | None = None) -> None:
    """One summary line per group: name -> predicate(kind, label) choosing its rows; fitted:
    the kinds whose rows a fit used."""
    for name, chosen in groups.items():
        errors = [p / m - 1 for kind, label, m, p in rows if chosen(kind, label)]
        used = any(flag and name.endswith(kind) for kind, flag in (fitted or {}).items())
        if errors:
            print(summary(f"{name} ({'fitted on' if used else 'not fitted on'})", errors))


if __name__ == "__main__":
    main()
