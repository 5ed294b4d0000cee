"""One H200 run for issue 12's fidelity targets: whole steps, fused kernels, host time by source.

Torch only (the GPU machine has nothing else). Writes into --out:

- h200_whole_steps.json: the five whole steps of whole_steps.py (wall per step, synchronised,
  median of 20 after 5 warm-ups; kernels per step, device-busy time and the busiest kernel
  names from torch.profiler; the host's speed right before and after, as the eager op loops'
  host time per call; then 30 paired reps, each a short eager probe right before one step; then
  20 held reps, the GPU held while the host issues the step: host and GPU time apart);
- h200_fused_kernels.json: F.scaled_dot_product_attention forward and forward+backward (flash /
  memory-efficient kernels), nn.LSTM / nn.GRU / nn.RNN layers (cuDNN), and optimizer steps
  (AdamW fused / foreach / for-loop, SGD fused / foreach): CUDA-event device time (L2 flushed)
  and host wall per call, and the GPU's time alone (one call behind a 50 ms hold);
- h200_host_programs.json: host time per launch source: eager op loops (and a convolution's and
  a batch norm's forward with its backward), ops that launch
  nothing (views, allocations) before one launch, autograd backward over a chain of small ops,
  foreach / fused optimizer steps over many small tensors, Python module calls, and the demo's
  small GPT training step in fp32 and bf16 autocast (model-shaped code).

Usage (device machine): python3 measure_h200_steps.py --out "$OUT"
Smoke test on a CPU:    python3 measure_h200_steps.py --out /tmp/x --smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from host_programs import backward_ops, eager_ops, framework_ops, no_launch_programs
from kernel_timing import (
    KB,
    MB,
    Timer,
    held_issue,
    queued_seconds_per_call,
    sleep_cycles_per_second,
)
from measure_h100 import describe_device
from reference_steps import REFERENCE_MODELS, training_step
from torch import nn
from whole_steps import WORKLOADS, build


def sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def wall_per_call(fn, dev: str, reps: int, warmup: int = 5) -> dict:
    """Synchronised wall seconds of fn(): median, min, p90 over reps."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    p90 = samples[min(len(samples) - 1, int(0.9 * len(samples)))]
    return {"median_s": statistics.median(samples), "min_s": samples[0], "p90_s": p90,
            "reps": reps}  # fmt: skip


def kernel_profile(fn, dev: str) -> dict:
    """Kernels of one call: count, summed device time, the span from the first kernel's start
    to the last one's end (span minus sum: the GPU idle between them, in the profiled call,
    whose launches the profiler slows: r15's CNN step spans 11.3 ms against a 6.3 ms wall), the
    busiest names."""
    if not dev.startswith("cuda"):
        return {}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(dev)
    evs = [e for e in prof.events() if e.device_type.name == "CUDA"]
    by_name: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for e in evs:
        by_name[e.name[:90]] += e.time_range.elapsed_us()
        counts[e.name[:90]] += 1
    starts, ends = [e.time_range.start for e in evs], [e.time_range.end for e in evs]
    span_us = max(ends) - min(starts) if evs else 0
    return {
        "count": len(evs),
        "device_seconds": sum(e.time_range.elapsed_us() for e in evs) / 1e6,
        "span_seconds": span_us / 1e6,
        "top": [{"name": n, "us": round(us, 2), "count": counts[n]}
                for n, us in by_name.most_common(25)],
    }  # fmt: skip


PROBE_CALLS = 300  # per eager op, in each host probe beside a whole step
# Each paired rep times a short probe of these ops right before one step: the host's speed
# switches within a run, often between two levels (r7-r10), so a step is predicted at the
# speed its own rep saw.
PAIRED_PROBE_OPS = ("add", "linear", "layer_norm")
PAIRED_PROBE_CALLS = 100
PAIRED_REPS = 30


def paired_reps(fn, dev: str, reps: int) -> list[dict]:
    """reps x (a short eager probe, then one synchronised step): wall and probe per rep; and
    per rep the host work that launches nothing (host_programs.framework_ops), for which part
    of the host's speed moves with the step's (not used by the predictions yet)."""
    ops = {name: op for name, op in eager_ops(dev).items() if name in PAIRED_PROBE_OPS}
    framework = framework_ops()
    out = []
    for _ in range(reps):
        framework_probe = eager_host(dev, PAIRED_PROBE_CALLS, framework)
        probe = eager_host(dev, PAIRED_PROBE_CALLS, ops)  # right before the step, as before
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        out.append({"wall_s": time.perf_counter() - t0, "probe": probe,
                    "framework_probe": framework_probe})  # fmt: skip
    return out


HELD_REPS = 20


def held_reps(fn, dev: str, wall_s: float, reps: int) -> dict:
    """Each rep holds the GPU (torch.cuda._sleep, three of the step's walls) and then issues the
    step, so the host's issue runs while the GPU spins: perf_counter over the call is the host's
    time alone (host_s), CUDA events from the hold's end to the step's last kernel the GPU's
    alone, never waiting on the host (device_s). Their sum against the wall shows how far the two
    overlap in an ordinary step. A rep whose host outlasted the hold (a step that waits on the
    GPU, or a launch queue that filled) is counted in past_hold."""
    if not dev.startswith("cuda"):
        return {}
    hold_s = max(3 * wall_s, 0.01)
    cycles = int(sleep_cycles_per_second() * hold_s)
    reps_out = []
    for _ in range(reps):
        host_s, device_s = held_issue(fn, cycles)
        reps_out.append({"host_s": host_s, "device_s": device_s})
    return {
        "hold_s": hold_s,
        "host_median_s": statistics.median(r["host_s"] for r in reps_out),
        "device_median_s": statistics.median(r["device_s"] for r in reps_out),
        "past_hold": sum(r["host_s"] > hold_s for r in reps_out),
        "reps": reps_out,
    }


def measure_whole_steps(dev: str, smoke: bool) -> dict:
    out = {}
    for name in WORKLOADS:
        try:
            w = build(name, dev, smoke)
            # The host's speed right before and after the step is timed: it moves between
            # lent machines and within a run (simulator/REPORT.md), and the eager loops are
            # what the [host] table was fitted on.
            before = eager_host(dev, PROBE_CALLS)
            timing = wall_per_call(w.step, dev, 3 if smoke else 20)
            probe = {"before": before, "after": eager_host(dev, PROBE_CALLS)}
            paired = paired_reps(w.step, dev, 3 if smoke else PAIRED_REPS)
            held = held_reps(w.step, dev, timing["median_s"], 3 if smoke else HELD_REPS)
            out[name] = {"description": w.description, "params": w.params, **timing,
                         "kernels": kernel_profile(w.step, dev), "host_probe": probe,
                         "paired": paired, "held": held}  # fmt: skip
        except Exception as exc:  # keep the other workloads
            out[name] = {"error": repr(exc)[:400]}
        shown = {k: v for k, v in out[name].items() if k not in ("kernels", "paired", "held")}
        if out[name].get("held"):
            shown.update({k: v for k, v in out[name]["held"].items() if k != "reps"})
        if "paired" in out[name]:
            shown["paired_median_s"] = statistics.median(r["wall_s"] for r in out[name]["paired"])
        print(name, shown, flush=True)
        del w
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
    return out


SDPA_CONFIGS = [  # batch, heads, seq, head_dim, causal, dtype
    (8, 32, 2048, 128, True, "bf16"), (8, 12, 256, 64, True, "bf16"),
    (16, 12, 128, 64, False, "bf16"), (4, 16, 1024, 64, True, "bf16"),
    (2, 16, 4096, 128, False, "bf16"), (8, 12, 128, 64, True, "bf16"),
    (8, 12, 256, 64, True, "fp32"), (16, 12, 128, 64, False, "fp32"),
    (4, 16, 1024, 64, True, "fp16"),
]  # fmt: skip
RNN_CONFIGS = [  # mode, seq, batch, input, hidden, layers
    ("LSTM", 64, 32, 512, 512, 2), ("LSTM", 64, 32, 512, 512, 1), ("LSTM", 128, 64, 1024, 1024, 1),
    ("LSTM", 32, 8, 256, 256, 1), ("GRU", 64, 32, 512, 512, 1), ("RNN_TANH", 64, 32, 512, 512, 1),
]  # fmt: skip
DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# The host programs' model-shaped step: the demo's small GPT (4 x 256, AdamW), host-bound on
# a GPU and none of the whole steps' models.
MODEL_PROGRAM = "demo_gpt"
MODEL_PRECISIONS = ("fp32", "bf16_autocast")


def sdpa_calls(b: int, h: int, s: int, d: int, causal: bool, dt: str, dev: str):
    """(forward, forward+backward) of F.scaled_dot_product_attention on random inputs."""
    q, k, v = (torch.randn(b, h, s, d, device=dev, dtype=DTYPE[dt], requires_grad=True)
               for _ in range(3))  # fmt: skip
    g = torch.randn(b, h, s, d, device=dev, dtype=DTYPE[dt])

    def fwd():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def fwd_bwd():
        torch.autograd.grad(fwd(), (q, k, v), g)

    return fwd, fwd_bwd


def rnn_calls(mode: str, seq: int, batch: int, inp: int, hid: int, layers: int, dev: str,
              bidirectional: bool = False):  # fmt: skip
    """(forward, forward+backward) of a cuDNN RNN layer stack on random inputs."""
    cls = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN}[mode]
    rnn = cls(inp, hid, layers, batch_first=True, bidirectional=bidirectional).to(dev)
    x = torch.randn(batch, seq, inp, device=dev, requires_grad=True)
    g = torch.randn(batch, seq, hid * (2 if bidirectional else 1), device=dev)

    def fwd():
        return rnn(x)[0]

    def fwd_bwd():
        torch.autograd.grad(fwd(), (x, *rnn.parameters()), g)

    return fwd, fwd_bwd


def gpu_alone(fn, dev: str) -> dict:
    """fn's GPU time with the host out of the way: one call issued behind a 50 ms hold, CUDA
    events around it (kernel_timing.queued_seconds_per_call), so that its kernels run back to
    back, with the gaps between them that the profiler's kernel sum leaves out."""
    if not dev.startswith("cuda"):
        return {}
    return queued_seconds_per_call(fn, 1, hold_s=0.05, reps=10)


def measure_sdpa(t: Timer, dev: str, smoke: bool) -> list:
    out = []
    for b, h, s, d, causal, dt in [(1, 2, 16, 8, True, "fp32")] if smoke else SDPA_CONFIGS:
        fwd, fwd_bwd = sdpa_calls(b, h, s, d, causal, dt, dev)
        rec = {"batch": b, "heads": h, "seq": s, "head_dim": d, "causal": causal, "dtype": dt,
               "forward": t.time(fwd), "forward_backward": t.time(fwd_bwd),
               "kernels_forward_backward": kernel_profile(fwd_bwd, dev),
               "gpu_alone_forward_backward": gpu_alone(fwd_bwd, dev)}  # fmt: skip
        out.append(rec)
    return out


def measure_rnn(t: Timer, dev: str, smoke: bool) -> list:
    out = []
    configs = [("LSTM", 4, 2, 8, 8, 1)] if smoke else RNN_CONFIGS
    for mode, seq, batch, inp, hid, layers in configs:
        fwd, fwd_bwd = rnn_calls(mode, seq, batch, inp, hid, layers, dev)
        out.append({"mode": mode, "seq": seq, "batch": batch, "input": inp, "hidden": hid,
                    "layers": layers, "forward": t.time(fwd), "forward_backward": t.time(fwd_bwd),
                    "kernels_forward_backward": kernel_profile(fwd_bwd, dev),
                    "gpu_alone_forward_backward": gpu_alone(fwd_bwd, dev)})  # fmt: skip
    return out


def _param_set(kind: str, dev: str, smoke: bool) -> list:
    if smoke:
        return [torch.randn(64, device=dev, requires_grad=True) for _ in range(4)]
    if kind == "gpt2_small":  # GPT-2 small's parameter shapes (tied embedding)
        shapes = [(50257, 768), (1024, 768)]
        for _ in range(12):
            shapes += [(768,), (768,), (2304, 768), (2304,), (768, 768), (768,), (768,), (768,),
                       (3072, 768), (3072,), (768, 3072), (768,)]  # fmt: skip
        shapes += [(768,), (768,)]
    elif kind == "many_small":
        shapes = [(256, 256)] * 200
    else:  # "few_large"
        shapes = [(4096, 4096)] * 8
    return [torch.randn(s, device=dev, requires_grad=True) for s in shapes]


OPTIMIZERS = {
    "adamw_fused": lambda p: torch.optim.AdamW(p, lr=1e-4, fused=True),
    "adamw_foreach": lambda p: torch.optim.AdamW(p, lr=1e-4, foreach=True),
    "adamw_forloop": lambda p: torch.optim.AdamW(p, lr=1e-4, foreach=False),
    "sgd_fused": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, fused=True),
    "sgd_foreach": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, foreach=True),
}


def measure_optimizers(t: Timer, dev: str, smoke: bool) -> list:
    out = []
    for kind in ("gpt2_small", "many_small", "few_large"):
        params = _param_set(kind, dev, smoke)
        for p in params:
            p.grad = torch.randn_like(p)
        for name, make in OPTIMIZERS.items():
            if name.endswith("fused") and not dev.startswith("cuda"):
                continue
            opt = make(params)
            opt.step()  # state built
            rec = {"param_set": kind, "optimizer": name, "tensors": len(params),
                   "elements": sum(p.numel() for p in params),
                   "device": t.time(opt.step, reps=10, flush=False),
                   "wall": wall_per_call(opt.step, dev, 10, warmup=2),
                   "kernels": kernel_profile(opt.step, dev),
                   "gpu_alone": gpu_alone(opt.step, dev)}  # fmt: skip
            out.append(rec)
            del opt
        del params
    return out


def eager_host(dev: str, calls: int, ops: dict | None = None) -> list[dict]:
    """Host seconds per call of each eager op in a hot loop (host_programs.eager_ops, or
    `ops`)."""
    out = []
    for name, fn in (ops or eager_ops(dev)).items():
        for _ in range(50):
            fn()
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        host = (time.perf_counter() - t0) / calls
        sync(dev)
        out.append({"op": name, "host_s_per_call": host, "calls": calls})
    return out


def measure_host_programs(dev: str, smoke: bool) -> dict:
    """Host seconds per launch by source (the GPU is never the bottleneck here)."""
    n = 100 if smoke else 2000
    out: dict = {"eager": [], "no_launch": [], "backward": [], "optimizer": [], "module": []}
    m = torch.randn(8, 64, device=dev)
    out["eager"] = eager_host(dev, n)
    out["eager_backward"] = eager_host(dev, n // 4, backward_ops(dev))
    for name, fn in no_launch_programs(dev).items():
        wall = wall_per_call(fn, dev, 5 if smoke else 50)
        out["no_launch"].append({"program": name, "wall": wall})
    for length in (50, 200):  # a chain of small differentiable ops; backward alone is timed
        leaf = torch.randn(1024, device=dev, requires_grad=True)

        def chain(leaf=leaf, length=length):
            y = leaf
            for i in range(length):
                y = torch.tanh(y * 1.01) if i % 2 else y + 0.5
            return y.sum()

        fwd = wall_per_call(chain, dev, 3 if smoke else 20)

        def backward(chain=chain):
            chain().backward()

        both = wall_per_call(backward, dev, 3 if smoke else 20)
        kernels = kernel_profile(backward, dev)
        out["backward"].append({"chain_ops": length, "forward": fwd, "forward_backward": both,
                                "kernels_forward_backward": kernels})  # fmt: skip
    for count in (8, 64, 256):
        params = [torch.randn(256, device=dev, requires_grad=True) for _ in range(count)]
        for p in params:
            p.grad = torch.randn_like(p)
        for name, make in OPTIMIZERS.items():
            if name.endswith("fused") and not dev.startswith("cuda"):
                continue
            opt = make(params)
            wall = wall_per_call(opt.step, dev, 5 if smoke else 30)
            kernels = kernel_profile(opt.step, dev).get("count")
            out["optimizer"].append({"optimizer": name, "tensors": count, "wall": wall,
                                     "kernels": kernels})  # fmt: skip
    for depth in (10, 50):
        net = nn.Sequential(*[nn.Linear(64, 64) for _ in range(depth)]).to(dev)
        with torch.no_grad():
            mod = wall_per_call(lambda net=net: net(m), dev, 5 if smoke else 30)
        weights = [(layer.weight, layer.bias) for layer in net]

        def functional(weights=weights):
            y = m
            for wt, b in weights:
                y = F.linear(y, wt, b)
            return y

        with torch.no_grad():
            fun = wall_per_call(functional, dev, 5 if smoke else 30)
        out["module"].append({"linear_layers": depth, "module_calls": mod, "functional": fun})
    out["model"] = []
    for precision in MODEL_PRECISIONS:  # model-shaped code: the host as a training step sees it
        _, step = training_step(dev, REFERENCE_MODELS[MODEL_PROGRAM], precision)
        wall = wall_per_call(step, dev, 3 if smoke else 30)
        out["model"].append({"model": MODEL_PROGRAM, "precision": precision, "wall": wall})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; runs on CPU")
    ap.add_argument("--budget-s", type=float, default=300.0, help="skip sections past this")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    device = describe_device(dev)
    docs = {"h200_whole_steps.json": {}, "h200_fused_kernels.json": {},
            "h200_host_programs.json": {}}  # fmt: skip
    for doc in docs.values():
        doc.update(schema=1, device=device, torch=torch.__version__, sections={})
    timer = Timer(dev, 4 * KB if args.smoke else 256 * MB)
    sections = [  # (file, key, function)
        ("h200_whole_steps.json", "steps", lambda: measure_whole_steps(dev, args.smoke)),
        ("h200_host_programs.json", "programs", lambda: measure_host_programs(dev, args.smoke)),
        ("h200_fused_kernels.json", "sdpa", lambda: measure_sdpa(timer, dev, args.smoke)),
        ("h200_fused_kernels.json", "rnn", lambda: measure_rnn(timer, dev, args.smoke)),
        ("h200_fused_kernels.json", "optimizers",
         lambda: measure_optimizers(timer, dev, args.smoke)),
    ]  # fmt: skip
    for file, key, fn in sections:
        doc = docs[file]
        if time.perf_counter() - started > args.budget_s:
            doc["sections"][key] = "skipped: over budget"
            continue
        t0 = time.perf_counter()
        try:
            doc[key] = fn()
            doc["sections"][key] = f"ok in {time.perf_counter() - t0:.1f} s"
        except Exception as exc:  # keep what the other sections measured
            doc["sections"][key] = f"failed: {exc!r}"[:500]
        print(f"{key}: {doc['sections'][key]}", flush=True)
        for name, d in docs.items():
            (args.out / name).write_text(json.dumps(d, indent=1))
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
