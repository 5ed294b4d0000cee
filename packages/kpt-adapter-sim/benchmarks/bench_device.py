"""kpt_sim device speed against the same work on the CPU, in one run (issue 5's targets).

    python packages/kpt-adapter-sim/benchmarks/bench_device.py            # every figure
    python packages/kpt-adapter-sim/benchmarks/bench_device.py --only roundtrip,async
    python packages/kpt-adapter-sim/benchmarks/bench_device.py --quick    # smaller, for a smoke run

Figures: a small op's launch + synchronize round trip (median); 1,000 small async ops then one
synchronize (per op); a GPT-2-small training step (12 layers, width 768, batch 4 x 128, AdamW,
fp32) in wall time; the client's resident memory after allocating 4 GB on kpt_sim; and that
step's SIMULATED time on h100-sxm against the step measured on a real H100
(simulator/calibration/h100_reference_steps_r2.json: its wall step, and its GPU-busy time
against the simulated chip-busy time of the same step). Also an empty synchronize (one daemon
call): `KPT_WIRE_SPIN_US=0` shows it without spin-then-block.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KPT_SIM_PROFILE", "h100-sxm")
# The same OpenMP waiting as the embedded daemon (kpt.adapters.sim starts it passive), so the
# CPU baseline is not slowed by spin-waiting threads on a shared host (set it to compare).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

import kpt.adapters.sim  # noqa: F401
from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim.demo import GPT2_SMALL, Trainer, reference_steps
from kpt.sim import replay

SECTIONS = ("roundtrip", "async", "gpt2", "rss")
rows: list[tuple] = []  # (figure, kpt_sim, cpu, ratio, target, verdict)


def row(figure: str, sim: float, cpu: float | None, unit: str, target: str, ok: bool | None):
    ratio = f"{sim / cpu:.2f}x" if cpu else "-"
    cpu_text = f"{cpu:.1f} {unit}" if cpu is not None else "-"
    verdict = "-" if ok is None else ("meets" if ok else "misses")
    rows.append((figure, f"{sim:.1f} {unit}", cpu_text, ratio, target, verdict))


def report(figure: str, simulated_ms: float, h100_ms: float) -> None:
    rows.append((figure, f"{simulated_ms:.2f} ms", f"{h100_ms:.2f} ms (H100)",
                 f"{simulated_ms / h100_ms:.2f}x", "report", "-"))  # fmt: skip


def median_us(fn, n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def bench_roundtrip(n: int) -> None:
    x_sim = torch.randn(16, 16, device="kpt_sim")
    x_cpu = torch.randn(16, 16)
    torch.kpt_sim.synchronize()

    def sim_op() -> None:
        x_sim.add(x_sim)
        torch.kpt_sim.synchronize()

    median_us(sim_op, 20)  # warm: plan cached, buffers cached
    sim = median_us(sim_op, n)
    cpu = median_us(lambda: x_cpu.add(x_cpu), n)
    row("small op launch + synchronize (median)", sim, cpu, "us", "<= 150 us", sim <= 150)
    # The round trip alone (one daemon call), for comparing transports and KPT_WIRE_SPIN_US=0.
    empty = median_us(torch.kpt_sim.synchronize, n)
    row("empty synchronize (median)", empty, None, "us", "report", None)


def bench_async(reps: int, ops: int = 1000) -> None:
    x_sim = torch.randn(16, 16, device="kpt_sim")
    x_cpu = torch.randn(16, 16)

    def burst(x: torch.Tensor, sync) -> None:
        for _ in range(ops):
            x.add(x)
        sync()

    sims, cpus = [], []
    burst(x_sim, torch.kpt_sim.synchronize)  # warm
    for _ in range(reps):  # alternate, so machine load hits both alike
        sims.append(median_us(lambda: burst(x_sim, torch.kpt_sim.synchronize), 1) / ops)
        cpus.append(median_us(lambda: burst(x_cpu, lambda: None), 1) / ops)
    sim, cpu = statistics.median(sims), statistics.median(cpus)
    row(f"{ops} async small ops + synchronize (per op)", sim, cpu, "us", "<= 50 us/op", sim <= 50)


def bench_gpt2(steps: int, config: dict) -> None:
    generator = torch.Generator().manual_seed(0)
    sim_trainer = Trainer("kpt_sim", config)
    cpu_trainer = Trainer("cpu", config)
    batch = sim_trainer.batch(generator)
    cpu_batch = tuple(t.cpu() for t in batch)
    for trainer, b in ((sim_trainer, batch), (cpu_trainer, cpu_batch)):
        trainer.step(*b).item()  # warm: optimizer state, plans, cached buffers
    sims, cpus = [], []
    for _ in range(steps):  # alternate kpt_sim and CPU steps
        start = time.perf_counter()
        sim_trainer.step(*batch).item()
        sims.append(time.perf_counter() - start)
        start = time.perf_counter()
        cpu_trainer.step(*cpu_batch).item()
        cpus.append(time.perf_counter() - start)
    sim, cpu = statistics.median(sims) * 1e3, statistics.median(cpus) * 1e3
    name = "GPT-2-small" if config is GPT2_SMALL else "GPT (--quick size)"
    row(f"{name} training step, wall", sim, cpu, "ms", "<= 2x CPU", sim <= 2 * cpu)

    simulated, chip_busy = timed_and_busy(sim_trainer, batch)
    reference = reference_steps("gpt2_small").get("fp32") if config is GPT2_SMALL else None
    if reference:
        measured = reference["step_ms_median"]
        busy = (reference.get("kernels_per_step") or {}).get("device_seconds")
        report("simulated h100-sxm step vs real H100 step", simulated, measured)
        if busy:
            report("simulated chip-busy time vs H100 GPU-busy", chip_busy, busy * 1e3)
    else:
        rows.append(("simulated h100-sxm step", f"{simulated:.2f} ms", "-", "-", "report", "-"))
    del sim_trainer, cpu_trainer
    gc.collect()
    torch.kpt_sim.empty_cache()


def timed_and_busy(trainer: Trainer, batch: tuple) -> tuple[float, float]:
    """One step's simulated ms (events) and the chip's busy ms in it (its ops replayed)."""
    client = runtime().client
    client.record_ops(True)
    try:
        _, simulated = trainer.timed_step(*batch)
        with tempfile.TemporaryDirectory() as folder:
            summary = replay(client.dump_ops(Path(folder) / "step.json"), profile="h100-sxm")
    finally:
        client.record_ops(False)
    return simulated, sum(row["busy_s"] for row in summary["devices"]) * 1e3


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_rss(gib: int) -> None:
    torch.kpt_sim.synchronize()
    gc.collect()
    before = rss_mb()
    held = [torch.zeros(1 << 28, device="kpt_sim") for _ in range(gib)]  # 1 GiB each, filled
    torch.kpt_sim.synchronize()
    sim = rss_mb() - before
    del held
    gc.collect()
    torch.kpt_sim.empty_cache()
    before = rss_mb()
    held = [torch.zeros(1 << 28) for _ in range(gib)]
    cpu = rss_mb() - before
    del held
    gc.collect()
    row(f"client RSS growth after {gib} GiB allocated", sim, cpu, "MB", "< 50 MB", sim < 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=", ".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    started = time.perf_counter()
    if "roundtrip" in chosen:
        bench_roundtrip(50 if args.quick else 300)
    if "async" in chosen:
        bench_async(2 if args.quick else 5)
    if "gpt2" in chosen:
        small = {"layers": 2, "width": 128, "heads": 4, "vocab": 1000, "context": 32, "batch": 2}
        bench_gpt2(1 if args.quick else 3, small if args.quick else GPT2_SMALL)
    if "rss" in chosen:
        bench_rss(1 if args.quick else 4)
    header = ("figure", "kpt_sim", "cpu (same run)", "ratio", "target", "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())
    print(f"({time.perf_counter() - started:.0f} s; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores)")  # fmt: skip


if __name__ == "__main__":
    main()
