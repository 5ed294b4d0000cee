"""Fused attention and LSTM layers on a GPU, swept over shapes, to fit what REPORT.md lacks.

REPORT.md validates kpt_sim's fused kernels on a few shapes (measure_h200_steps.py). Two of
its misses need data of their own to fit on, at shapes the report does not use:

- fp32 F.scaled_dot_product_attention runs the memory-efficient kernel (CUTLASS "cutlassF" /
  "cutlassB"), not flash attention: a grid of batch, heads, sequence, head size and
  causality, forward and forward+backward; small bf16 shapes beside them (the start-up of a
  few-microsecond forward);
- nn.LSTM layers (cuDNN): a grid of sequence, batch and width, the training forward alone and
  forward+backward, each kernel by name, so the backward's kernels can be told apart.

Each configuration is profiled over REPS calls (torch.profiler, CUDA kernels only): per call,
the kernels' summed device time and, by name, each kernel's time and count. L2 is flushed
before each call. Torch only.

Usage (device machine): python3 measure_fused_sweep.py --out "$OUT"
Smoke test on a CPU:    python3 measure_fused_sweep.py --out /tmp/x --smoke
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict

import torch
from measure_h100 import sweep_main
from measure_h200_steps import rnn_calls, sdpa_calls

REPS = 5
# REPORT.md's own shapes (measure_h200_steps.py), left out here: they validate the fit.
REPORT_SDPA = {(8, 12, 256, 64, True, "fp32"), (16, 12, 128, 64, False, "fp32"),
               (8, 12, 256, 64, True, "bf16"), (16, 12, 128, 64, False, "bf16"),
               (8, 12, 128, 64, True, "bf16")}  # fmt: skip
REPORT_LSTM = {(64, 32, 512, 512), (128, 64, 1024, 1024), (32, 8, 256, 256)}


def sdpa_configs(smoke: bool) -> list[tuple]:
    """(batch, heads, seq, head_dim, causal, dtype)."""
    if smoke:
        return [(1, 2, 16, 8, True, "fp32")]
    fp32 = itertools.product((1, 4, 16), (8, 16), (128, 512, 1024, 2048), (64, 128), (False, True))
    small = itertools.product((2, 8, 32), (12,), (64, 128, 256), (64, 128), (False, True))
    configs = [(*c, "fp32") for c in fp32] + [(*c, "bf16") for c in small]
    return [c for c in configs if c not in REPORT_SDPA]


def lstm_configs(smoke: bool) -> list[tuple]:
    """(seq, batch, input, hidden), one layer."""
    if smoke:
        return [(4, 2, 8, 8)]
    grid = itertools.product((16, 64), (4, 16, 64), (256, 512, 1024))
    return [(s, b, h, h) for s, b, h in grid if (s, b, h, h) not in REPORT_LSTM]


def profile_calls(fn, flush: torch.Tensor, cuda: bool) -> dict:
    """Per call (median of REPS): summed kernel time, and each kernel name's time and count."""
    for _ in range(2):
        fn()
    if not cuda:
        fn()
        return {}
    from torch.profiler import ProfilerActivity, profile

    calls = []
    for _ in range(REPS):
        flush.zero_()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        kernels: dict[str, list[float]] = defaultdict(list)
        for e in prof.events():
            if e.device_type.name == "CUDA":
                kernels[e.name[:100]].append(e.time_range.elapsed_us())
        calls.append(kernels)
    total = statistics.median(sum(sum(v) for v in k.values()) for k in calls)
    names = {n for k in calls for n in k}
    by_name = {n: {"us": statistics.median(sum(k.get(n, [0.0])) for k in calls),
                   "count": max(len(k.get(n, [])) for k in calls)} for n in names}  # fmt: skip
    return {"device_us": total, "kernels": by_name}


def profile_cases(cases, dev: str) -> list[dict]:
    """Each (fields, make) case's fields with profile_calls(make()) added (L2 flushed before
    every call), printed as it goes: the body of the one-op sweeps (GEMMs and the like)."""
    flush = torch.empty(64 << 20, dtype=torch.float32, device=dev)  # 256 MB > L2
    rows = []
    for fields, make in cases:
        row = {**fields, **profile_calls(make(), flush, dev.startswith("cuda"))}
        rows.append(row)
        print(row, flush=True)
    return rows


def measure_sdpa(smoke: bool, dev: str, flush: torch.Tensor) -> list[dict]:
    rows = []
    for b, h, s, d, causal, dt in sdpa_configs(smoke):
        fwd, fwd_bwd = sdpa_calls(b, h, s, d, causal, dt, dev)
        cuda = dev.startswith("cuda")
        rows.append({"batch": b, "heads": h, "seq": s, "head_dim": d, "causal": causal,
                     "dtype": dt, "forward": profile_calls(fwd, flush, cuda),
                     "forward_backward": profile_calls(fwd_bwd, flush, cuda)})  # fmt: skip
        print({k: v for k, v in rows[-1].items() if k not in ("forward", "forward_backward")},
              rows[-1]["forward"].get("device_us"), rows[-1]["forward_backward"].get("device_us"),
              flush=True)  # fmt: skip
    return rows


def measure_lstm(smoke: bool, dev: str, flush: torch.Tensor) -> list[dict]:
    rows = []
    for seq, batch, inp, hidden in lstm_configs(smoke):
        fwd, fwd_bwd = rnn_calls("LSTM", seq, batch, inp, hidden, 1, dev)
        cuda = dev.startswith("cuda")
        rows.append({"seq": seq, "batch": batch, "input": inp, "hidden": hidden,
                     "forward": profile_calls(fwd, flush, cuda),
                     "forward_backward": profile_calls(fwd_bwd, flush, cuda)})  # fmt: skip
        print((seq, batch, inp, hidden), rows[-1]["forward"].get("device_us"),
              rows[-1]["forward_backward"].get("device_us"), flush=True)  # fmt: skip
    return rows


def main() -> None:
    def sweep(smoke: bool, dev: str) -> dict:
        flush = torch.empty(64 << 20, dtype=torch.float32, device=dev)  # 256 MB > L2
        return {"reps": REPS, "sdpa": measure_sdpa(smoke, dev, flush),
                "lstm": measure_lstm(smoke, dev, flush)}  # fmt: skip

    sweep_main(__doc__, "h200_fused_sweep.json", sweep)


if __name__ == "__main__":
    main()
