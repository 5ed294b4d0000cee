"""Why a demo step takes the time it does, from the simulator's own accounting.

A step is recorded as an op trace on the daemon (``SimClient.record_ops``/``dump_ops``) and
replayed on a chip profile (``kpt.sim.replay``). The replay says how long the step takes, how
long the chip was busy in it (per op class), and how many ops the host issued. When the chip is
idle for most of the step, it is waiting for the host to issue the next op (the profile's host
model: ``host_issue_us``, or its ``[host]`` table): the step is launch-bound, and a change that
saves chip time but adds ops (bf16 autocast's casts) makes it slower. Every sentence here is
computed from those figures, so it says "chip-bound" when a larger model makes that true.

The measured figures beside them come from real GPUs (simulator/calibration/): the H100 run
whose host h100-sxm's host time was fitted on, and the H200 validation run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpt.sim import replay

CALIBRATION = Path("simulator") / "calibration"
# Below this share of the step busy, the chip mostly waits for the host to issue its next op.
LAUNCH_BOUND_BELOW = 0.5
# chip profile -> the real GPU's reference run of the demo models (calibration/reference_steps.py)
MEASURED_RUNS = {
    "h100-sxm": ("H100", CALIBRATION / "h100_reference_steps_r2.json"),
    "h200": ("H200", CALIBRATION / "h200_reference_steps.json"),
}
PRECISION_NAMES = {"fp32": "fp32", "bf16": "bf16_autocast"}  # demo name -> the run's name


@dataclass(frozen=True)
class StepBreakdown:
    """One step replayed on one profile, in milliseconds per step."""

    profile: str
    step_ms: float
    chip_busy_ms: float
    launches: float  # ops the host issued per step
    busy_by_class_ms: dict[str, float] = field(default_factory=dict)
    op_counts: dict[str, float] = field(default_factory=dict)  # launches per op name

    @property
    def chip_share(self) -> float:
        """Fraction of the step the chip is busy."""
        return self.chip_busy_ms / self.step_ms if self.step_ms > 0 else 0.0

    @property
    def bound(self) -> str:
        """'launch-bound' when the chip idles most of the step (waiting on the host's issuing),
        else 'chip-bound'."""
        return "launch-bound" if self.chip_share < LAUNCH_BOUND_BELOW else "chip-bound"

    @property
    def us_per_op(self) -> float:
        """Step time per issued op: the host's issue interval when the step is launch-bound."""
        return self.step_ms / self.launches * 1e3 if self.launches else 0.0


@dataclass(frozen=True)
class MeasuredStep:
    """A step timed on a real GPU: wall time per step and the kernels' summed device time."""

    gpu: str
    step_ms: float
    gpu_busy_ms: float | None
    kernels: int | None


def record_steps(client: Any, step: Callable[[], Any], steps: int, path: str | Path) -> Path:
    """Run ``step`` ``steps`` times with the daemon recording ops; the op trace's path.

    Needs the daemon owner's rights (the demo's embedded daemon has them)."""
    client.record_ops(True)
    try:
        for _ in range(steps):
            step()
        return Path(client.dump_ops(path))
    finally:
        client.record_ops(False)


def breakdown(ops_path: str | Path, profile: str, steps: int) -> StepBreakdown:
    """The recorded ``steps`` steps replayed on ``profile``, per step."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (how many steps the trace holds), got {steps!r}")
    summary = replay(ops_path, profile=profile)
    doc = json.loads(Path(ops_path).read_text())
    names = Counter(op.get("name") or "?" for op in doc["ops"] if op.get("op") == "launch")
    busiest = max(summary["devices"], key=lambda row: row["busy_s"])
    return StepBreakdown(
        profile=profile,
        step_ms=summary["predicted_s"] * 1e3 / steps,
        chip_busy_ms=busiest["busy_s"] * 1e3 / steps,
        launches=busiest["ops"] / steps,
        busy_by_class_ms={k: v * 1e3 / steps for k, v in busiest["busy_by_class"].items()},
        op_counts={name: count / steps for name, count in names.items()},
    )


def measured_step(profile: str, precision: str, model: str = "demo_gpt") -> MeasuredStep | None:
    """The real GPU's figures for ``profile``'s chip, or None (no run, or outside the repo)."""
    if profile not in MEASURED_RUNS:
        return None
    gpu, relative = MEASURED_RUNS[profile]
    wanted = PRECISION_NAMES.get(precision, precision)
    for run in _runs(relative, model):
        if run.get("precision") == wanted:
            kernels = run.get("kernels_per_step") or {}
            busy = kernels.get("device_seconds")
            return MeasuredStep(
                gpu=gpu,
                step_ms=float(run["step_ms_median"]),
                gpu_busy_ms=None if busy is None else busy * 1e3,
                kernels=kernels.get("count"),
            )
    return None


def _runs(relative: Path, model: str) -> list[dict]:
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        path = base / relative
        if path.exists():
            return json.loads(path.read_text()).get("models", {}).get(model, {}).get("runs", [])
    return []


def explain(base: StepBreakdown, other: StepBreakdown, names: tuple[str, str]) -> str:
    """Why ``other`` (names[1]) is slower or faster than ``base`` (names[0]) on one profile."""
    a, b = names
    change = (other.step_ms / base.step_ms - 1) * 100 if base.step_ms else 0.0
    direction = "slower" if change > 0 else "faster"
    lines = [
        f"On {other.profile} the simulated {b} step takes {other.step_ms:.2f} ms against "
        f"{base.step_ms:.2f} ms for {a} ({change:+.0f}%, {direction}).",
        f"  chip busy: {other.chip_busy_ms:.3f} ms against {base.chip_busy_ms:.3f} ms "
        f"({_class_changes(base, other)})",
        f"  ops issued: {other.launches:.0f} per step against {base.launches:.0f} "
        f"({_op_changes(base, other)})",
    ]
    if base.bound == other.bound == "launch-bound":
        lines.append(
            f"  Both steps are launch-bound: the chip is busy only {100 * base.chip_share:.0f}% "
            f"of the {a} step and {100 * other.chip_share:.0f}% of the {b} step, and waits the "
            f"rest for the host to issue the next op (one every {base.us_per_op:.1f} us and "
            f"{other.us_per_op:.1f} us). So the step time follows the number of ops, not the "
            f"chip time {b} saves; {b} is {direction} by what its "
            f"{'extra' if other.launches > base.launches else 'fewer'} ops cost the host."
        )
    elif base.bound == other.bound:
        lines.append(
            f"  Both steps are chip-bound: the chip is busy most of each step "
            f"({100 * base.chip_share:.0f}% and {100 * other.chip_share:.0f}%), so {b} is "
            f"{direction} by the chip time it {'adds' if change > 0 else 'saves'}."
        )
    else:
        lines.append(f"  {a} is {base.bound}, {b} is {other.bound}.")
    return "\n".join(lines)


def _class_changes(base: StepBreakdown, other: StepBreakdown) -> str:
    classes = set(base.busy_by_class_ms) | set(other.busy_by_class_ms)
    deltas = {
        c: other.busy_by_class_ms.get(c, 0.0) - base.busy_by_class_ms.get(c, 0.0) for c in classes
    }
    top = sorted(deltas.items(), key=lambda kv: -abs(kv[1]))[:2]
    return ", ".join(f"{name} {delta * 1e3:+.0f} us" for name, delta in top if delta) or "same"


def _op_changes(base: StepBreakdown, other: StepBreakdown) -> str:
    deltas = _deltas(base.op_counts, other.op_counts)
    top = sorted(deltas.items(), key=lambda kv: -abs(kv[1]))[:2]
    return ", ".join(f"{delta:+.0f} {name}" for name, delta in top if round(delta)) or "same ops"


def _deltas(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {name: b.get(name, 0.0) - a.get(name, 0.0) for name in set(a) | set(b)}


def measured_lines(profiles: Iterable[str], precisions: Iterable[str]) -> list[str]:
    """One line per real GPU run of the demo model, for beside the simulated figures."""
    lines = []
    for profile in profiles:
        runs = {p: measured_step(profile, p) for p in precisions}
        found = {p: m for p, m in runs.items() if m is not None}
        if not found:
            continue
        gpu = next(iter(found.values())).gpu
        parts = [
            f"{p} step {m.step_ms:.2f} ms, GPU busy "
            + (f"{m.gpu_busy_ms:.3f} ms" if m.gpu_busy_ms is not None else "n/a")
            + (f", {m.kernels} kernels" if m.kernels is not None else "")
            for p, m in found.items()
        ]
        line = f"measured on a real {gpu}: " + "; ".join(parts)
        steps = [m.step_ms for m in found.values()]
        if len(steps) == 2:
            names = list(found)
            line += f" ({names[1]} {100 * (steps[1] / steps[0] - 1):+.0f}%)"
        lines.append(line)
    return lines
