"""The demo's A/B step: fp32 against bf16 autocast on kpt_sim, and why bf16 comes out as it does.

``compare_precisions`` runs the two arms as a kpt.abtest Experiment (a progress bar follows the
trials); ``explain_precisions`` records one step of each arm, replays both on the chip profiles
with a real measurement (h100-sxm, h200), prints the simulator's breakdown and plots simulated
chip-busy time beside the real GPU-busy time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from kpt.adapters.sim.demo import DEMO_CONFIG, Trainer, progress_bar
from kpt.adapters.sim.demo_breakdown import (
    StepBreakdown,
    breakdown,
    explain,
    measured_lines,
    measured_step,
    record_steps,
)
from kpt.adapters.sim.demo_plots import BusyBar, plot_chip_busy

# The chips with a real measurement of the demo model (simulator/calibration/).
MEASURED_PROFILES = ("h100-sxm", "h200")
GPU_LABELS = {"h100-sxm": "H100", "h200": "H200"}


def precision_arms(device: Any = "kpt_sim:0") -> dict[str, Trainer]:
    """The A/B arms: the demo model in fp32 and under bf16 autocast, same seed, same batches."""
    return {name: Trainer(device, DEMO_CONFIG, precision=name) for name in ("fp32", "bf16")}


def compare_precisions(
    steps: int = 40, device: Any = "kpt_sim:0", arms: dict[str, Trainer] | None = None
) -> Any:
    """fp32 against bf16 autocast on kpt_sim, as a kpt.abtest Experiment; prints the verdict.

    Simulated time is deterministic (no run-to-run variance), so the tested metric is the
    per-batch training loss (it varies with the batch); the simulated step times are reported
    beside it as exact figures. A progress bar follows the trials.
    """
    import kpt.abtest as ab
    import kpt.adapters.sim  # noqa: F401

    arms = arms or precision_arms(device)
    generators = {name: torch.Generator().manual_seed(2) for name in arms}
    sim_ms: dict[str, list[float]] = {name: [] for name in arms}

    def trial(name: str) -> dict:
        trainer = arms[name]
        loss, ms = trainer.timed_step(*trainer.batch(generators[name]))
        sim_ms[name].append(ms)
        return {"loss": loss.item(), "sim_ms": ms}

    warmup, budget = 2, max(2, steps)
    print(f"metric: the training loss of each step's batch (lower is better), {budget} "
          f"measured steps per arm in ABBA order after {warmup} warm-up steps each")  # fmt: skip
    bar = progress_bar(total=(warmup + budget) * len(arms), desc="A/B trials")

    def progress(done: Any) -> None:
        bar.update()
        state = "warm-up" if done.warmup else f"{done.measured}/{done.budget} measured"
        bar.set_postfix_str(f"{done.arm} loss {done.values['loss']:.3f}, {state}", refresh=False)

    experiment = ab.Experiment(
        {name: (lambda n=name: trial(n)) for name in arms},
        metric="loss",
        warmup=warmup,
        max_trials=budget,
        min_trials=min(10, steps),
        sequential=False,
        progress=progress,
    )
    try:
        result = experiment.run()
    finally:
        bar.close()
    print(result.summary())
    fp32, bf16 = (sorted(sim_ms[n])[len(sim_ms[n]) // 2] for n in ("fp32", "bf16"))
    print(f"simulated step (deterministic, no variance to test): fp32 {fp32:.3f} ms, "
          f"bf16 autocast {bf16:.3f} ms ({(bf16 / fp32 - 1) * 100:+.1f}%)")  # fmt: skip
    for name in arms:
        losses = result.samples[name]["loss"]
        print(f"{name}: final loss {losses[-1]:.3f} after {len(losses)} measured steps")
    return result


def explain_precisions(
    arms: dict[str, Trainer],
    out: Path | None = None,
    profiles: tuple[str, ...] = MEASURED_PROFILES,
    steps: int = 2,
) -> dict[str, dict[str, StepBreakdown]]:
    """Record ``steps`` steps of each arm, replay them on ``profiles``, print why bf16 is slower
    or faster there and plot chip-busy time against the real GPUs'. {profile: {arm: breakdown}}.

    Recording needs the daemon owner's rights: the demo's embedded daemon has them."""
    from kpt.adapters.sim._runtime import runtime

    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="kpt-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    client = runtime().client
    traces = {}
    for name, trainer in arms.items():
        inputs = trainer.batch(torch.Generator().manual_seed(3))
        trainer.timed_step(*inputs)  # warm: buffers from the cache, as in a long run
        path = folder / f"step_ops_{name}.json"
        traces[name] = record_steps(
            client, lambda t=trainer, i=inputs: t.timed_step(*i), steps, path
        )
    table = {
        profile: {name: breakdown(path, profile, steps) for name, path in traces.items()}
        for profile in profiles
    }
    names = tuple(arms)
    for rows in table.values():
        print(explain(rows[names[0]], rows[names[1]], (names[0], f"{names[1]} autocast")))
    for line in measured_lines(profiles, names):
        print(line)
    bars = []
    for profile, rows in table.items():
        for name, row in rows.items():
            real = measured_step(profile, name)
            bars.append(
                BusyBar(
                    label=f"{GPU_LABELS.get(profile, profile)} {name}",
                    simulated_busy_ms=row.chip_busy_ms,
                    simulated_step_ms=row.step_ms,
                    measured_busy_ms=real.gpu_busy_ms if real else None,
                    measured_step_ms=real.step_ms if real else None,
                )
            )
    plot = plot_chip_busy(folder / "chip_busy.png", bars)
    if plot:
        print("plot:", plot, "(simulated chip-busy time beside the real GPU-busy time)")
    return table
