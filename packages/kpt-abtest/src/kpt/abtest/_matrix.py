"""A benchmark matrix (devices x dtypes x batch sizes) with a regression verdict per cell.

Every cell's step is timed in one interleaved run (cells forward, then backward: host drift
cancels as in ABBA). Against a saved baseline each cell gets criterion's verdict: a change is
"regressed" or "improved" only when it is significant AND its whole interval lies outside the
noise band (+-noise, relative); "within noise" when the interval lies inside the band, and
"inconclusive" when it straddles the band's edge (rerun with more trials). Significance is
Holm-adjusted over the cells, so a 60-cell matrix does not raise ~3 false alarms per run at
alpha 0.05: the gate's false-alarm rate is at most alpha for the whole matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from kpt.abtest._bench import MEASURED, SIMULATED, Timer, device_timer, simulated_devices
from kpt.abtest._compare import compare
from kpt.abtest._multiple import holm

VERDICTS = ("regressed", "improved", "inconclusive", "within noise", "no change detected", "new",
            "missing", "not comparable")  # fmt: skip
# Verdicts that fail a CI gate.
FAILING = ("regressed",)


def cell_key(device: Any, dtype: Any, batch_size: int) -> str:
    return f"{device}/{dtype}/bs={batch_size}"


@dataclass(frozen=True)
class MatrixResult:
    """Step times per cell: {cell key: {"samples": [...], "clock": "measured"|"simulated"}}."""

    workload: str
    cells: dict[str, dict[str, Any]]

    def to_baseline(self) -> dict[str, dict[str, Any]]:
        return self.cells

    def summary(self) -> str:
        lines = []
        for key, cell in self.cells.items():
            mark = " [simulated]" if cell["clock"] == SIMULATED else ""
            lines.append(f"{key}{mark}: {np.mean(cell['samples']):.4g} s/step (mean)")
        return "\n".join(lines)


@dataclass(frozen=True)
class CellVerdict:
    key: str
    verdict: str
    baseline_mean: float | None
    mean: float | None
    relative_change: float | None  # mean / baseline mean - 1: +0.10 is 10% slower
    relative_ci: tuple[float, float] | None
    p_adjusted: float | None  # Holm over all compared cells
    clock: str = MEASURED


@dataclass(frozen=True)
class RegressionReport:
    """Verdict per cell against a baseline; ``failed`` is what a CI gate checks."""

    baseline: str
    alpha: float
    noise: float
    verdicts: dict[str, CellVerdict]

    @property
    def failed(self) -> bool:
        return any(v.verdict in FAILING for v in self.verdicts.values())

    def summary(self) -> str:
        counts = {name: 0 for name in VERDICTS}
        for v in self.verdicts.values():
            counts[v.verdict] += 1
        shown = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
        gate = "FAIL (a cell regressed)" if self.failed else "pass"
        return (
            f"Against baseline {self.baseline!r}: {shown}; gate {gate}. Changes count when "
            f"significant (Holm over cells, alpha {self.alpha:g}) and outside +-{self.noise:.0%}."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "regression-matrix",
            "baseline": self.baseline,
            "alpha": self.alpha,
            "noise": self.noise,
            "failed": self.failed,
            "summary": self.summary(),
            "verdicts": {
                k: {
                    "verdict": v.verdict,
                    "baseline_mean": v.baseline_mean,
                    "mean": v.mean,
                    "relative_change": v.relative_change,
                    "relative_ci": list(v.relative_ci) if v.relative_ci else None,
                    "p_adjusted": v.p_adjusted,
                    "clock": v.clock,
                }
                for k, v in self.verdicts.items()
            },
        }


def benchmark_matrix(
    workload: Callable[[Any, str, int], Callable[[], Any]],
    devices: Sequence[Any],
    dtypes: Sequence[str],
    batch_sizes: Sequence[int],
    *,
    trials: int = 20,
    warmup: int = 2,
    timer: Timer | None = None,
    simulated: Collection[str] | None = None,
) -> MatrixResult:
    """Time ``workload(device, dtype, batch_size)()`` for every combination, interleaved.

    dtype names are passed as given (e.g. "float32", "bfloat16"): the workload builds its model
    and inputs, so kpt.abtest itself never imports torch.
    """
    if int(trials) != trials or trials < 2:
        raise ValueError(f"trials must be a whole number >= 2, got {trials!r}")
    for name, values in (("devices", devices), ("dtypes", dtypes), ("batch_sizes", batch_sizes)):
        if not values:
            raise ValueError(f"{name} is empty; give at least one")
    for size in batch_sizes:
        if int(size) != size or size < 1:
            raise ValueError(f"batch size {size!r} must be a whole number >= 1")
    names = [str(d) for d in devices]
    simulated = set(simulated_devices(names, timer) if simulated is None else map(str, simulated))
    timer = timer or device_timer
    combos = [(d, str(t), int(b)) for d, t, b in product(devices, dtypes, batch_sizes)]
    steps = {cell_key(*c): (c[0], workload(*c)) for c in combos}
    for _ in range(warmup):
        for device, step in steps.values():
            timer(device, step)
    times: dict[str, list[float]] = {key: [] for key in steps}
    order = list(steps.items())
    for trial in range(trials):
        for key, (device, step) in order if trial % 2 == 0 else order[::-1]:
            times[key].append(float(timer(device, step)))
    cells = {
        key: {"samples": times[key], "clock": SIMULATED if str(d) in simulated else MEASURED}
        for key, (d, _) in steps.items()
    }
    name = getattr(workload, "__qualname__", None) or type(workload).__name__
    return MatrixResult(workload=name, cells=cells)


def _threshold(low: float, high: float, noise: float) -> str:
    """criterion's rule for a significant change, plus a name for an interval too wide to say."""
    if low > noise:
        return "regressed"
    if high < -noise:
        return "improved"
    if -noise <= low and high <= noise:
        return "within noise"
    return "inconclusive"  # significant, but the interval reaches into the band: more trials


def compare_to_baseline(
    cells: Mapping[str, Mapping[str, Any]],
    baseline: Mapping[str, Any],
    *,
    name: str = "baseline",
    alpha: float = 0.05,
    noise: float = 0.02,
) -> RegressionReport:
    """Verdict per cell of ``cells`` (a MatrixResult's) against a loaded baseline."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a relative band >= 0 such as 0.02 (2%), got {noise!r}")
    base_cells = baseline.get("cells", baseline)
    verdicts: dict[str, CellVerdict] = {}
    tested: dict[str, Any] = {}
    for key, cell in cells.items():
        mean = float(np.mean(cell["samples"]))
        old = base_cells.get(key)
        if old is None:
            verdicts[key] = CellVerdict(key, "new", None, mean, None, None, None, cell["clock"])
        elif old.get("clock", MEASURED) != cell["clock"]:
            verdicts[key] = CellVerdict(key, "not comparable", float(np.mean(old["samples"])),
                                        mean, None, None, None, cell["clock"])  # fmt: skip
        else:
            tested[key] = compare(old["samples"], cell["samples"], "mean", alpha=alpha)
    adjusted = holm([c.p_value for c in tested.values()]) if tested else []
    for (key, c), p in zip(tested.items(), adjusted, strict=True):
        verdict = "no change detected" if p > alpha else _threshold(*c.relative_ci, noise)
        verdicts[key] = CellVerdict(
            key, verdict, c.estimate_a, c.estimate_b, c.relative_effect,
            tuple(c.relative_ci), float(p), cells[key]["clock"],
        )  # fmt: skip
    for key, old in base_cells.items():
        if key not in cells:
            verdicts[key] = CellVerdict(key, "missing", float(np.mean(old["samples"])), None,
                                        None, None, None, old.get("clock", MEASURED))  # fmt: skip
    return RegressionReport(baseline=name, alpha=alpha, noise=noise, verdicts=verdicts)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}%"


def matrix_markdown(data: Mapping[str, Any]) -> str:
    """Markdown for a RegressionReport's dict: one row per cell, the gate's outcome first."""
    gate = "**FAIL**" if data.get("failed") else "pass"
    lines = ["# Benchmark regressions", "", f"Gate: {gate}. {data.get('summary', '')}", ""]
    lines += [
        "| cell | verdict | baseline s/step | now s/step | change (CI) | p (Holm) |",
        "|---|---|---:|---:|---|---:|",
    ]
    for key, v in data.get("verdicts", {}).items():
        ci = v.get("relative_ci")
        change = _pct(v.get("relative_change"))
        if ci:
            change += f" [{_pct(ci[0])}, {_pct(ci[1])}]"
        cells = [
            f"{v.get('baseline_mean'):.4g}" if v.get("baseline_mean") is not None else "",
            f"{v.get('mean'):.4g}" if v.get("mean") is not None else "",
        ]
        p = v.get("p_adjusted")
        mark = " [simulated]" if v.get("clock") == SIMULATED else ""
        lines.append(
            f"| {key}{mark} | {v.get('verdict')} | {cells[0]} | {cells[1]} | {change} "
            f"| {'' if p is None else f'{p:.3g}'} |"
        )
    return "\n".join(lines) + "\n"
