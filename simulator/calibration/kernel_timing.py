"""How one kernel is timed on the GPU: CUDA events, warm-ups, an L2 flush, the median of repeats.

Shared by the kernel catalogue (kernels.py) and the driver (measure_h100.py); torch only.
"""

from __future__ import annotations

import statistics
import time

import torch

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30
ES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.float8_e4m3fn: 1}
DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


# The GPU spins this long after the flush, before the start event: the host's issue of the
# timed call (torch's dispatch, cuDNN's plan lookup) then happens while the GPU is busy, not
# inside the timed window. Without it, the H200 run's small kernels (their host issue longer
# than the 53 us flush) measured 15-25 us for ~5 us of kernel, their reps spread 2-4x.
HOLD_S = 300e-6


def sleep_cycles_per_second() -> float:
    """How many cycles of torch.cuda._sleep the GPU spins per second (timed once, CUDA events)."""
    cycles = 1_000_000
    torch.cuda._sleep(1000)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return cycles / (start.elapsed_time(end) / 1e3)


def held_issue(fn, cycles: int, calls: int = 1) -> tuple[float, float]:
    """One rep of `calls` calls of fn issued while the GPU spins `cycles` of torch.cuda._sleep:
    (the host's seconds issuing them, the GPU's seconds from the hold's end to their last
    kernel). A host ahead of the GPU lets the calls queue and run back to back, as an eager
    step's kernels do; host seconds over the hold mean the GPU waited for it."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(cycles)
    start.record()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host_s = time.perf_counter() - t0
    end.record()
    end.synchronize()
    return host_s, start.elapsed_time(end) / 1e3


def queued_seconds_per_call(fn, calls: int, hold_s: float = 0.05, reps: int = 5) -> dict:
    """Device seconds per call of fn, `calls` calls issued behind a hold of hold_s (held_issue),
    the median over reps. host_past_hold counts reps whose issue outlasted the hold (those
    include host time)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    cycles = int(sleep_cycles_per_second() * hold_s)
    timed = [held_issue(fn, cycles, calls) for _ in range(reps)]
    return {"seconds": statistics.median(device for _, device in timed) / calls, "calls": calls,
            "host_past_hold": sum(host > hold_s for host, _ in timed)}  # fmt: skip


class Timer:
    """Times a callable on the device: warm-up, optional L2 flush before each rep, median."""

    def __init__(self, device: str, flush_bytes: int) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        # Writing a buffer larger than L2 (50 MB on H100) evicts the operands of the last rep.
        self.flush_buf = torch.empty(flush_bytes // 4, dtype=torch.float32, device=device)
        self.hold_cycles = self._hold_cycles() if self.cuda else 0

    def _hold_cycles(self) -> int:
        """GPU clock cycles of torch.cuda._sleep that last HOLD_S (measured once)."""
        return int(sleep_cycles_per_second() * HOLD_S)

    def flush(self) -> None:
        self.flush_buf.zero_()

    def time(self, fn, reps: int = 20, warmup: int = 3, flush: bool = True) -> dict:
        for _ in range(warmup):
            fn()
        self.sync()
        # Fewer reps for long kernels: aim for about 0.3 s per configuration.
        t0 = time.perf_counter()
        fn()
        self.sync()
        one = time.perf_counter() - t0
        reps = max(5, min(reps, int(0.3 / max(one, 1e-6))))
        samples, issue = [], []
        for _ in range(reps):
            if flush:
                self.flush()
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                torch.cuda._sleep(self.hold_cycles)
                t0 = time.perf_counter()
                start.record()
                fn()
                end.record()
                issue.append(time.perf_counter() - t0)
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
        samples.sort()
        out = {
            "seconds": statistics.median(samples),
            "seconds_min": samples[0],
            "seconds_p90": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
            "reps": reps,
            "l2_flushed": flush,
        }
        if issue:  # reps whose host issue outlasted the hold may still include host time
            out["host_issue_s"] = statistics.median(issue)
            out["reps_past_hold"] = sum(s > HOLD_S for s in issue)
        return out

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def record(op_class, op, dtype, shapes, flops, nbytes, timing, **extra) -> dict:
    return {
        "op_class": op_class,
        "op": op,
        "dtype": dtype,
        "shapes": shapes,
        "flops": float(flops),
        "bytes": float(nbytes),
        **timing,
        **extra,
    }
