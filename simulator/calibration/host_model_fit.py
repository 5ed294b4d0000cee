"""Fit the h200 profile's [host] table (kpt.sim._host_model) on the H200's host programs.

The hot-loop programs of the FIT_RUNS (measure_h200_steps.py's h200_host_programs*.json;
host-bound on the GPU: tiny tensors) and the LSTM layers of their h200_fused_kernels*.json are
run again on kpt_sim, one call of each recorded as an op trace, and replayed on the h200
profile with candidate host figures: forward_us (per launch of eager Python code; GEMMs, norms
and reductions get their own), backward_us (per launch of autograd's backward),
optimizer_launch_us and optimizer_tensor_us (per foreach / fused optimizer launch, and per
tensor it touches), rnn_call_us, rnn_step_us and rnn_backward_step_us (per call and per time
step of a fused LSTM layer, forward and backward: cuDNN's host loop), host_op_us (per op that
launches nothing: a view, an allocation). They are fitted by least squares on
log(predicted / measured) over these loops; then one factor on all of them, fitted on the
runs' model-shaped steps (the demo's small GPT): a launch in a model's code costs the host
more than in a loop. The whole steps (predict_h200_steps.py) are the validation. Writes the
[host] table into the h200 profile and HOST_MODEL.md.

Usage: python host_model_fit.py [--dry-run]   (needs kpt-adapter-sim and scipy; CPU only)
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from host_programs import (  # noqa: E402
    STACKED_LAYERS,
    backward_ops,
    eager_ops,
    no_launch_programs,
)
from reference_steps import REFERENCE_MODELS, training_step  # noqa: E402
from step_traces import launches, record  # noqa: E402  (sets KPT_SIM_* before torch)
from torch import nn  # noqa: E402

PROFILE = HERE.parent / "src/kpt/sim/profiles/h200.toml"
# The runs the table is fitted on (file suffixes of measure_h200_steps.py's output), back to
# back on one machine: the host drifts between runs minutes apart, so both count.
FIT_RUNS = ("", "_r6")
# Later runs whose loops time ops the fit runs' did not (batch_norm from r7 on, a convolution's
# and a batch norm's backward from r9 on): those loops join the fit at the fit runs' host, each
# divided by its run's host speed. r12 is left out: its process was pinned to one core, which
# made its backward loops a third cheaper than r11's on the same machine.
LATER_LOOP_RUNS = ("_r7", "_r8", "_r9", "_r10", "_r11")
LOOP_KINDS = {"eager": eager_ops, "eager_backward": backward_ops}  # host_programs' loops
OUT = HERE / "HOST_MODEL.md"
FIT_JSON = HERE / "h200_host_fit.json"
PARAMS = ("forward_us", "backward_us", "optimizer_launch_us", "optimizer_tensor_us",
          "rnn_call_us", "rnn_step_us", "rnn_backward_step_us", "host_op_us")  # fmt: skip
# Eager launches of these classes get their own figure ([host.forward_class_us]); the eager
# programs time one op of each (an F.linear's GEMM, a layer norm, a sum, a convolution, a
# training-mode batch norm: cuDNN's is the dearest call of them).
CLASSES = ("matmul", "layernorm", "reduction", "conv", "batchnorm")
# Backward launches of these classes get their own figure ([host.backward_class_us]): cuDNN's
# convolution and batch-norm backward calls, timed as a forward with its backward
# (host_programs.backward_ops, from r9 on).
BACKWARD_CLASSES = ("conv", "batchnorm")
FIGURES = (PARAMS + tuple(f"forward_class_us.{c}" for c in CLASSES)
           + tuple(f"backward_class_us.{c}" for c in BACKWARD_CLASSES))  # fmt: skip
EAGER_CALLS = 100  # calls per eager-loop trace (the GPU measured 2,000; host time per call)
OPTIMIZERS = {
    "adamw_fused": lambda p: torch.optim.AdamW(p, lr=1e-4, fused=True),
    "adamw_foreach": lambda p: torch.optim.AdamW(p, lr=1e-4, foreach=True),
    "adamw_forloop": lambda p: torch.optim.AdamW(p, lr=1e-4, foreach=False),
    "sgd_fused": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, fused=True),
    "sgd_foreach": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, foreach=True),
}


def measured_programs(suffix: str) -> dict:
    return json.loads((HERE / f"h200_host_programs{suffix}.json").read_text())


@functools.cache
def run_programs(suffix: str) -> dict:
    """One run's host programs (measure_h200_steps.py's h200_host_programs{suffix}.json)."""
    return measured_programs(suffix)["programs"]


def eager_per_call(records: list[dict]) -> dict[str, float]:
    return {rec["op"]: rec["host_s_per_call"] for rec in records}


def host_speed(records: list[dict]) -> float:
    """How much longer a host took per launch than the fit runs' host: the median over the
    eager op loops (host_programs.eager_ops) of its host time per call over the fit runs'
    (their geometric mean)."""
    fitted = [eager_per_call(run_programs(suffix)["eager"]) for suffix in FIT_RUNS]
    mine = eager_per_call(records)
    return statistics.median(mine[op] / statistics.geometric_mean([f[op] for f in fitted])
                             for op in mine if all(op in f for f in fitted))  # fmt: skip


def later_loops() -> list[dict]:
    """LATER_LOOP_RUNS' loops (LOOP_KINDS) of ops the fit runs did not time, at the fit runs'
    host (divided by their run's host_speed), each naming its run and kind."""
    fitted = [run_programs(s) for s in FIT_RUNS]
    known = {kind: set.intersection(*(set(eager_per_call(f.get(kind, []))) for f in fitted))
             for kind in LOOP_KINDS}  # fmt: skip
    out = []
    for suffix in LATER_LOOP_RUNS:
        if not (HERE / f"h200_host_programs{suffix}.json").exists():
            continue
        run = run_programs(suffix)
        speed = host_speed(run["eager"])
        for kind in LOOP_KINDS:
            out += [{**rec, "host_s_per_call": rec["host_s_per_call"] / speed, "run": suffix,
                     "kind": kind}
                    for rec in run.get(kind, []) if rec["op"] not in known[kind]]  # fmt: skip
    return out


def engine_starts() -> list[str]:
    """The autograd engine's start per backward call, in each run that timed STACKED_LAYERS
    convolution + batch-norm layers under one backward beside each layer's own loop (one call
    each): the stack costs STACKED_LAYERS x both single loops less their 2 x STACKED_LAYERS
    starts, plus its one."""
    suffixes = [path.stem.removeprefix("h200_host_programs")
                for path in HERE.glob("h200_host_programs_r*.json")]  # fmt: skip
    lines = []
    for suffix in sorted(suffixes, key=lambda s: int(s.removeprefix("_r"))):
        loops = eager_per_call(run_programs(suffix).get("eager_backward", []))
        stacked = loops.get(f"conv2d_batch_norm_x{STACKED_LAYERS}")
        if stacked is None:
            continue
        singles = loops["conv2d"] + loops["batch_norm"]
        start = (STACKED_LAYERS * singles - stacked) / (2 * STACKED_LAYERS - 1)
        fitted = "in the fit" if suffix in LATER_LOOP_RUNS else "not in the fit"
        lines.append(
            f"- {run_label(suffix)} ({fitted}): {start * 1e6:.1f} us (a convolution's loop "
            f"{loops['conv2d'] * 1e6:.1f} us, a batch norm's {loops['batch_norm'] * 1e6:.1f} "
            f"us, the stack {stacked * 1e6:.1f} us)"
        )
    return lines


def eager_programs(records: list[dict], kind: str = "eager"):
    """(name, callable on kpt_sim, measured seconds) of one kind of op loops."""
    ops = LOOP_KINDS[kind]("kpt_sim")
    for rec in records:
        fn = ops[rec["op"]]

        def loop(fn=fn):
            for _ in range(EAGER_CALLS):
                fn()

        yield f"{kind} {rec['op']} x{EAGER_CALLS}", loop, EAGER_CALLS * rec["host_s_per_call"]


def programs(measured: dict, suffix: str = ""):
    """(name, callable on kpt_sim, measured seconds) for every host-loop program of the GPU
    run (`suffix`: its files)."""
    dev = "kpt_sim"
    m = torch.randn(8, 64, device=dev)
    yield from eager_programs(measured["eager"])
    no_launch = no_launch_programs(dev)
    for rec in measured.get("no_launch", []):
        yield rec["program"], no_launch[rec["program"]], rec["wall"]["median_s"]
    for rec in measured["backward"]:
        length = rec["chain_ops"]
        leaf = torch.randn(1024, device=dev, requires_grad=True)

        def chain(leaf=leaf, length=length):
            y = leaf
            for i in range(length):
                y = torch.tanh(y * 1.01) if i % 2 else y + 0.5
            return y.sum()

        yield f"chain {length} forward", chain, rec["forward"]["median_s"]
        yield (f"chain {length} forward+backward", lambda c=chain: c().backward(),
               rec["forward_backward"]["median_s"])  # fmt: skip
    for rec in measured["optimizer"]:
        params = [torch.randn(256, device=dev, requires_grad=True) for _ in range(rec["tensors"])]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = OPTIMIZERS[rec["optimizer"]](params)
        yield f"{rec['optimizer']} {rec['tensors']} tensors", opt.step, rec["wall"]["median_s"]
    for rec in measured["module"]:
        depth = rec["linear_layers"]
        net = nn.Sequential(*[nn.Linear(64, 64) for _ in range(depth)]).to(dev)
        weights = [(layer.weight, layer.bias) for layer in net]

        def modules(net=net):
            with torch.no_grad():
                return net(m)

        def functional(weights=weights):
            with torch.no_grad():
                y = m
                for wt, b in weights:
                    y = F.linear(y, wt, b)
                return y

        yield f"{depth} nn.Linear modules", modules, rec["module_calls"]["median_s"]
        yield f"{depth} F.linear calls", functional, rec["functional"]["median_s"]
    fused = HERE / f"h200_fused_kernels{suffix}.json"
    yield from lstm_programs(json.loads(fused.read_text())["rnn"])


def model_programs(measured: dict):
    """(name, callable on kpt_sim, measured seconds) of the run's model-shaped steps (the
    demo's small GPT): what a launch costs the host inside a model's code, not a hot loop."""
    for rec in measured.get("model", []):
        _, step = training_step("kpt_sim", REFERENCE_MODELS[rec["model"]], rec["precision"])
        yield f"{rec['model']} {rec['precision']} step", step, rec["wall"]["median_s"]


def lstm_programs(records: list):
    """nn.LSTM layers: a cuDNN RNN call is one aten op whose library issues every time step's
    kernels from the host (CUDA events around one call: its wall on the GPU's timeline)."""
    for rec in records:
        if rec["mode"] != "LSTM":
            continue
        layer = nn.LSTM(rec["input"], rec["hidden"], rec["layers"], batch_first=True)
        layer = layer.to("kpt_sim")
        x = torch.randn(rec["batch"], rec["seq"], rec["input"], device="kpt_sim",
                        requires_grad=True)  # fmt: skip
        g = torch.randn(rec["batch"], rec["seq"], rec["hidden"], device="kpt_sim")
        label = f"LSTM x{rec['layers']} seq {rec['seq']} {rec['input']}->{rec['hidden']}"
        yield f"{label} forward", lambda layer=layer, x=x: layer(x), rec["forward"]["seconds"]
        yield (f"{label} forward+backward",
               lambda layer=layer, x=x, g=g: torch.autograd.grad(layer(x)[0], (x,), g),
               rec["forward_backward"]["seconds"])  # fmt: skip


def host_tables(host: dict, header: str = "[host]\n") -> str:
    """TOML of a figures dict: [host] keys, then each per-class table ([host.forward_class_us]
    from "forward_class_us.<class>" keys, and the like)."""
    text = header + "".join(f"{k} = {v}\n" for k, v in host.items() if "." not in k)
    tables: dict[str, str] = {}
    for key, value in host.items():
        if "." in key:
            table, name = key.split(".", 1)
            tables[table] = tables.get(table, "") + f"{name} = {value}\n"
    return text + "".join(f"\n[host.{t}]\n{lines}" for t, lines in tables.items()) + "\n"


def strip_host(text: str) -> str:
    return re.sub(r"(?ms)^\[host(\.[a-z_]+)?\][^\n]*\n.*?(?=^\[|\Z)", "", text)


def profile_with(host: dict, tmp: Path) -> str:
    """The h200 profile with this [host] table (replacing any)."""
    text = strip_host(PROFILE.read_text())
    table = host_tables({k: round(v, 4) for k, v in host.items()})
    path = tmp / f"h200-host-{abs(hash(tuple(host.items())))}.toml"
    path.write_text(_after_header(text, table))
    return str(path)


def _after_header(text: str, table: str) -> str:
    """Tables must follow the top-level keys: put [host] before the first table."""
    at = re.search(r"(?m)^\[", text).start()
    return text[:at] + table + text[at:]


def predicted_s(trace: dict, host: dict, tmp: Path) -> float:
    from kpt.sim import replay

    return replay(trace, profile=profile_with(host, tmp))["predicted_s"]


def fit(items: list, tmp: Path, rounds: int = 3, figures: tuple = FIGURES) -> dict:
    """Least squares on relative error. While the host binds, each program's time is linear in
    the four figures: replays around a point give the slopes (launches of each source, tensors),
    non-negative least squares the figures; repeated from the answer (where a program turns
    device-bound the slope flattens)."""
    from scipy.optimize import nnls

    point = dict.fromkeys(figures, 10.0)
    if "optimizer_tensor_us" in point:
        point["optimizer_tensor_us"] = 1.0
    # A figure no program's time depends on (a library the programs never call) stays 0.
    for _ in range(rounds):
        rows, targets = [], []
        for _, trace, real in items:
            base = predicted_s(trace, point, tmp)
            slopes = []
            for name in figures:
                step = 0.5 * point[name] + 0.5
                moved = predicted_s(trace, {**point, name: point[name] + step}, tmp)
                slopes.append((moved - base) / step)
            offset = base - sum(s * point[n] for s, n in zip(slopes, figures))
            rows.append([s / real for s in slopes])
            targets.append(1.0 - offset / real)
        values, _ = nnls(rows, targets)
        point = dict(zip(figures, (round(float(v), 3) for v in values)))
    return point


def model_factor(items: list, host: dict, tmp: Path) -> float:
    """The one factor on every host figure that best prices the model-shaped steps (least
    squares on log(predicted / measured)): the hot loops' figures times this is the host as a
    model's code drives it (caches cold, module calls, Python between the launches)."""
    from scipy.optimize import minimize_scalar

    def cost(log_factor: float) -> float:
        scaled = {k: v * math.exp(log_factor) for k, v in host.items()}
        return sum(math.log(predicted_s(trace, scaled, tmp) / real) ** 2
                   for _, trace, real in items)  # fmt: skip

    best = minimize_scalar(cost, bounds=(math.log(0.5), math.log(4.0)), method="bounded")
    return round(math.exp(best.x), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print, write nothing")
    ap.add_argument(
        "--drop",
        action="append",
        default=[],
        choices=FIGURES,
        help="leave this figure out of the model (an ablation); repeatable",
    )
    args = ap.parse_args()
    import kpt.adapters.sim  # noqa: F401  (registers the kpt_sim device)

    runs = {suffix: measured_programs(suffix) for suffix in FIT_RUNS}
    device = runs[FIT_RUNS[0]]["device"]
    machine = (
        "the nvidia-h200 device machine (16-core x86-64 host), torch "
        f"{device['torch']}, Python {device['python']}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="kpt-host-fit-"))
    traces: dict[str, dict] = {}  # the same programs in every run: one trace each

    def traced(name, fn):
        if name not in traces:
            traces[name] = record(fn, tmp / f"program-{len(traces)}.json")
            print(f"{name}: {len(launches(traces[name]))} launches", flush=True)
        return traces[name]

    loops, models = [], []
    for suffix, measured in runs.items():
        run = run_label(suffix)
        loops += [(f"{run}: {name}", traced(name, fn), real)
                  for name, fn, real in programs(measured["programs"], suffix)]  # fmt: skip
        models += [(f"{run}: {name}", traced(name, fn), real)
                   for name, fn, real in model_programs(measured["programs"])]  # fmt: skip
    later = later_loops()
    for rec in later:
        for name, fn, real in eager_programs([rec], rec["kind"]):
            loops.append((f"{run_label(rec['run'])} at the fit runs' host: {name}",
                          traced(name, fn), real))  # fmt: skip
    figures = tuple(f for f in FIGURES if f not in args.drop)
    if not any(rec["kind"] == "eager_backward" for rec in later):  # no run times them yet
        figures = tuple(f for f in figures if not f.startswith("backward_class_us."))
    loop_host = fit(loops, tmp, figures=figures)
    factor = model_factor(models, loop_host, tmp) if models else 1.0
    host = {k: round(v * factor, 3) for k, v in loop_host.items()}
    lines = ["# Host time per launch source (h200 profile, [host])", "",
             "`host_model_fit.py`: the host programs of two H200 runs back to back on one "
             f"machine ({', '.join(f'`h200_host_programs{s}.json`' for s in FIT_RUNS)}) run on "
             "kpt_sim, one call of each replayed on `h200`, with the loops of ops they did not "
             "time from later runs (a batch norm; a convolution's and a batch norm's forward "
             "with its backward), each divided by its run's host speed (its eager loops' time "
             "per call over these runs'). The figures are fitted on the hot "
             "loops (least squares on log(predicted / measured)); then one factor on all of "
             "them, fitted on the model-shaped steps (the demo's small GPT, fp32 and bf16 "
             "autocast): a launch inside a model's code costs the host more than the same "
             "launch in a loop. The whole steps (`predict_h200_steps.py`, simulator/REPORT.md) "
             "validate the table; none of their models is among these programs.", "",
             f"Model factor: **{factor:.3f}**.", "",
             "| source | hot loops, us | in the profile (x factor), us |", "|---|---|---|",
             *(f"| {k} | {v:.2f} | {host[k]:.2f} |" for k, v in loop_host.items()), "",
             "| program | kpt_sim launches | measured | predicted | ratio |",
             "|---|---|---|---|---|"]  # fmt: skip
    rows = []
    for (name, trace, real), figures in [*((i, loop_host) for i in loops),
                                         *((i, host) for i in models)]:  # fmt: skip
        pred = predicted_s(trace, figures, tmp)
        rows.append({"program": name, "launches": len(launches(trace)), "measured_s": real,
                     "predicted_s": pred})  # fmt: skip
        lines.append(f"| {name} | {len(launches(trace))} | {real * 1e6:.1f} us | "
                     f"{pred * 1e6:.1f} us | {pred / real:.2f}x |")  # fmt: skip
    errors = sorted(abs(r["predicted_s"] / r["measured_s"] - 1) for r in rows)
    lines += ["", f"Fit programs (the loops at the loops' figures, the model steps at the "
              f"profile's): median |error| {errors[len(errors) // 2]:.1%}, max {errors[-1]:.1%} "
              f"over {len(errors)}.", "",
              "The backward figures are fitted on loops of one autograd.grad call per layer, so "
              "each also holds that call's engine start, which a step's one backward shares. "
              f"The start, from the runs that also timed {STACKED_LAYERS} convolution + batch-"
              "norm layers under one backward (host_programs.backward_ops):", "",
              *engine_starts()]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.dry_run:
        return
    OUT.write_text(text)
    FIT_JSON.write_text(json.dumps({"host": host, "loop_host": loop_host, "model_factor": factor,
                                    "machine": machine, "programs": rows}, indent=1))  # fmt: skip
    header = ("[host]  # fitted by calibration/host_model_fit.py on the H200 host programs\n"
              f'machine = "{machine}"\n')  # fmt: skip
    PROFILE.write_text(_after_header(strip_host(PROFILE.read_text()), host_tables(host, header)))


def run_label(suffix: str) -> str:
    """A run's name in the reports: its file suffix, or the first fitted run's (r5)."""
    return suffix.lstrip("_") or "r5"


if __name__ == "__main__":
    main()
