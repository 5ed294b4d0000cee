"""Fused calls (SDPA, cuDNN RNN layers, fused and foreach optimizers) of measure_h200_steps.py
against kpt_sim: each call runs unchanged through the public torch API on kpt_sim (timing
only), its ops are recorded and replayed on a profile, and the device-busy seconds set beside
the run's profiler kernel sum (the profile's kernels alone, Profile.kernels_only) and, where the
run timed the call alone on the GPU, beside that (the whole profile). predict_h200_steps.py
writes the tables into simulator/REPORT.md.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from host_model_fit import OPTIMIZERS
from measure_h200_steps import rnn_calls, sdpa_calls
from step_traces import record

HERE = Path(__file__).parent


def replay_s(trace: dict, profile: str) -> tuple[float, float]:
    """(predicted end, device-busy seconds) of a trace on a profile."""
    from kpt.sim import replay

    out = replay(trace, profile=profile)
    return out["predicted_s"], sum(row["busy_s"] for row in out["devices"])


@functools.cache
def kernels_only(profile: str):
    """The profile's kernels back to back (kpt.sim Profile.kernels_only), once per profile: cost
    caches are kept per profile object."""
    from kpt.sim import load_profile

    return load_profile(profile).kernels_only()


FUSED = HERE / "h200_fused_kernels.json"  # the fitted run's (r5); other runs' files alike


def _alone(rec: dict, key: str) -> dict:
    """The GPU's time alone (one call behind a long hold) where the run has it, and the
    profiler's kernel count, for the held tables (held_steps.fused_section)."""
    alone = rec.get(f"gpu_alone{key}", {}).get("seconds")
    return {"gpu_alone_s": alone, "kernels": rec[f"kernels{key}"]["count"]} if alone else {}


def _predicted(trace: dict, profile: str, alone: dict) -> dict:
    """kpt_sim's device-busy seconds for a recorded call: its kernels alone (against the
    profiler's kernel sum) and, where the run timed the call alone on the GPU, all of it."""
    _, summed = replay_s(trace, kernels_only(profile))
    if not alone:
        return {"predicted_s": summed}
    return {"predicted_s": summed, "predicted_alone_s": replay_s(trace, profile)[1], **alone}


def sdpa(tmp: Path, profile: str, source: Path = FUSED) -> list[dict]:
    rows = []
    for rec in json.loads(source.read_text())["sdpa"]:
        shape = (rec["batch"], rec["heads"], rec["seq"], rec["head_dim"])
        fwd, fwd_bwd = sdpa_calls(*shape, rec["causal"], rec["dtype"], "kpt_sim")
        label = f"b{shape[0]} h{shape[1]} s{shape[2]} d{shape[3]} {rec['dtype']}" + (
            " causal" if rec["causal"] else "")  # fmt: skip
        profiled = rec["kernels_forward_backward"]
        # The forward kernel's own time from the profile (cuDNN "fprop", CUTLASS "cutlassF"):
        # CUDA events around one small forward also hold the host's set-up time.
        forward_us = sum(k["us"] for k in profiled["top"] if "fprop" in k["name"]
                         or "cutlassF" in k["name"])  # fmt: skip
        parts = (
            ("forward", fwd, forward_us * 1e-6),
            ("forward+backward", fwd_bwd, profiled["device_seconds"]),
        )
        for part, fn, real in parts:
            alone = _alone(rec, "_forward_backward") if part == "forward+backward" else {}
            trace = record(fn, tmp / "sdpa.json")
            rows.append({"kernel": f"sdpa {part} {label}", "measured_s": real,
                         **_predicted(trace, profile, alone)})  # fmt: skip
    return rows


def rnn(tmp: Path, profile: str, source: Path = FUSED) -> list[dict]:
    rows = []
    for rec in json.loads(source.read_text())["rnn"]:
        _, fwd_bwd = rnn_calls(rec["mode"], rec["seq"], rec["batch"], rec["input"], rec["hidden"],
                               rec["layers"], "kpt_sim")  # fmt: skip
        trace = record(fwd_bwd, tmp / "rnn.json")
        label = (f"{rec['mode']} x{rec['layers']} seq {rec['seq']} batch {rec['batch']} "
                 f"{rec['input']}->{rec['hidden']} forward+backward")  # fmt: skip
        real = rec["kernels_forward_backward"]["device_seconds"]
        alone = _alone(rec, "_forward_backward")
        rows.append({"kernel": label, "measured_s": real,
                     **_predicted(trace, profile, alone)})  # fmt: skip
    return rows


def optimizers(tmp: Path, profile: str, source: Path = FUSED) -> list[dict]:
    rows = []
    for rec in json.loads(source.read_text())["optimizers"]:
        if rec["param_set"] == "gpt2_small" or rec["optimizer"] == "adamw_forloop":
            continue  # 124M parameters: the daemon would hold them all; per-tensor loops: not fused
        shapes = {"many_small": [(256, 256)] * 200, "few_large": [(4096, 4096)] * 8}
        params = [torch.zeros(s, device="kpt_sim", requires_grad=True)
                  for s in shapes[rec["param_set"]]]  # fmt: skip
        for p in params:
            p.grad = torch.zeros_like(p)
        opt = OPTIMIZERS[rec["optimizer"]](params)
        trace = record(opt.step, tmp / "opt.json")
        size = "256x256" if rec["param_set"] == "many_small" else "4096x4096"
        real = rec["kernels"]["device_seconds"]
        rows.append(
            {
                "kernel": f"{rec['optimizer']} step, {rec['tensors']} x {size}",
                "measured_s": real,
                **_predicted(trace, profile, _alone(rec, "")),
            }
        )
        del opt, params
    return rows
