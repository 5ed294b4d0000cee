"""Experiments: run arms in a drift-cancelling order, stop by a sequential test or a budget.

Trial orders (``schedule=``), because measuring every A before every B turns machine drift
(thermal throttling, clock boost, caches, noisy neighbours) into a fake effect:

- ``"abba"``: each block runs the arms forward then backward (A B B A, A B C C B A). A linear
  drift cancels exactly inside every block, and the experiment only stops at block ends.
- ``"interleaved"``: each block runs every arm once in a fresh random order; drift and fixed
  order effects (A always warming B's cache) cancel in expectation.
- ``"blocked"``: all trials of one arm, then the next. Offered only to show the problem.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kpt.abtest._compare import compare
from kpt.abtest._sequential import SequentialTest

SCHEDULES = ("abba", "interleaved", "blocked")
TIME_METRIC = "time_s"


def block_order(schedule: str, n_arms: int, rng: np.random.Generator) -> list[int]:
    """Arm indices of one block; every arm appears equally often in it."""
    forward = list(range(n_arms))
    if schedule == "abba":
        return forward + forward[::-1]
    if schedule == "interleaved":
        return [int(i) for i in rng.permutation(n_arms)]
    raise ValueError(f"schedule {schedule!r} has no blocks")


@dataclass(frozen=True)
class TrialDone:
    """Passed to ``Experiment(progress=...)`` after every trial, warm-up ones included."""

    arm: str
    warmup: bool
    measured: int  # measured trials so far, all arms together
    budget: int  # the most measured trials the run may take (it can stop earlier)
    values: Mapping[str, float]  # what this trial returned


@dataclass(frozen=True)
class ExperimentResult:
    """What an experiment measured and concluded. ``summary()`` is the plain-language verdict."""

    arms: tuple[str, ...]
    baseline: str
    metric: str
    statistic: str
    samples: dict[str, dict[str, np.ndarray]]
    comparisons: dict[str, Any]  # challenger arm -> Comparison against the baseline
    decisions: dict[str, str]  # challenger arm -> decision
    stopped_by: str
    trajectory: dict[str, list[dict[str, float | str]]]  # challenger -> interval after each look
    schedule: str
    order: list[str] = field(repr=False)  # arm of every measured trial, in run order
    elapsed_s: float = 0.0
    # challenger -> the sequential test's final anytime-valid interval (empty without looks).
    # After optional stopping this is the valid interval; the fixed-horizon comparisons are not.
    anytime: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = []
        for arm, comparison in self.comparisons.items():
            lines.append(
                f"{arm} vs {self.baseline} on metric {self.metric!r} "
                f"(a = {self.baseline}, b = {arm}): "
            )
            if arm in self.anytime:
                lines[-1] += anytime_sentence(self.anytime[arm], self.statistic)
                lines.append(f"  Fixed-horizon ({INVALID_AFTER_STOPPING}): ")
            lines[-1] += comparison.summary()
        n = {arm: len(self.samples[arm][self.metric]) for arm in self.arms}
        counts = ", ".join(f"{arm} {count}" for arm, count in n.items())
        lines.append(
            f"Stopped by {self.stopped_by}; trials per arm: {counts}; {self.schedule} order."
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: plain floats, lists and strings only."""
        return {
            "arms": list(self.arms),
            "baseline": self.baseline,
            "metric": self.metric,
            "statistic": self.statistic,
            "schedule": self.schedule,
            "stopped_by": self.stopped_by,
            "elapsed_s": self.elapsed_s,
            "samples": {
                arm: {m: [float(v) for v in values] for m, values in metrics.items()}
                for arm, metrics in self.samples.items()
            },
            "comparisons": {arm: comparison_to_dict(c) for arm, c in self.comparisons.items()},
            "anytime": {arm: dict(v) for arm, v in self.anytime.items()},
            "decisions": dict(self.decisions),
            "trajectory": {arm: list(points) for arm, points in self.trajectory.items()},
            "order": list(self.order),
            "summary": self.summary(),
        }


INVALID_AFTER_STOPPING = "invalid after optional stopping, shown for reference only"


def anytime_sentence(look: dict[str, Any], statistic: str) -> str:
    """The headline after sequential looks: the anytime-valid interval, labelled as such."""
    low, high = look["interval"]
    level = f"{100 * (1 - look['alpha']):g}%"
    if np.isfinite(low) and np.isfinite(high):
        interval = f"[{low:.6g}, {high:.6g}] (estimate {look['estimate']:+.6g})"
    else:
        interval = "not defined yet (too few values in the tail for this quantile)"
    return (
        f"anytime-valid {level} interval for b - a in {statistic}: {interval}; sequential "
        f"test, valid under optional stopping, {look['looks']} looks, n = {look['n']} per arm; "
        f"decision {look['decision']}."
    )


def comparison_to_dict(comparison: Any) -> dict[str, Any]:
    """A Comparison as plain JSON types, with its summary sentence."""
    fields = [
        "metric",
        "method",
        "estimate_a",
        "estimate_b",
        "effect",
        "relative_effect",
        "relative_ci",
        "ci",
        "p_value",
        "alpha",
        "decision",
        "n_a",
        "n_b",
        "interval",
        "effect_name",
    ]
    out: dict[str, Any] = {}
    for name in fields:
        if hasattr(comparison, name):
            out[name] = _plain(getattr(comparison, name))
    out["summary"] = comparison.summary()
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class Experiment:
    """Compare arms (callables or configurations) on one metric, in a drift-cancelling order.

    ``arms`` maps names to zero-argument callables, or to configurations passed to ``run``.
    A trial's return value is the measurement: a number (recorded as ``metric``), a dict of
    metrics, or None (the trial's wall time is recorded as ``"time_s"``). The first arm is the
    baseline unless ``baseline=`` names another.
    """

    def __init__(
        self,
        arms: Mapping[str, Any],
        run: Callable[[Any], Any] | None = None,
        *,
        metric: str = TIME_METRIC,
        statistic: str | float = "mean",
        higher_is_better: bool = False,
        baseline: str | None = None,
        warmup: int = 2,
        schedule: str = "abba",
        max_trials: int = 200,
        min_trials: int = 10,
        sequential: bool = True,
        time_budget_s: float | None = None,
        alpha: float = 0.05,
        seed: int = 0,
        clock: Callable[[], float] = time.perf_counter,
        progress: Callable[[TrialDone], None] | None = None,
    ) -> None:
        if len(arms) < 2:
            raise ValueError(f"an experiment needs at least two arms, got {list(arms)}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule {schedule!r} unknown; use one of {', '.join(SCHEDULES)}")
        if not all(callable(a) for a in arms.values()) and run is None:
            raise ValueError("arms that are configurations need run=callable(config)")
        if baseline is not None and baseline not in arms:
            raise ValueError(f"baseline {baseline!r} is not an arm; arms: {', '.join(arms)}")
        for name, value in {"warmup": warmup, "min_trials": min_trials}.items():
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if int(max_trials) != max_trials or max_trials < 2:
            raise ValueError(f"max_trials must be a whole number >= 2, got {max_trials!r}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        self.arms = dict(arms)
        self.run_config = run
        self.metric = metric
        self.statistic = statistic
        self.higher_is_better = higher_is_better
        self.baseline = baseline if baseline is not None else next(iter(arms))
        self.warmup = int(warmup)
        self.schedule = schedule
        self.max_trials = int(max_trials)
        self.min_trials = int(min_trials)
        self.sequential = sequential and schedule != "blocked"
        self.time_budget_s = time_budget_s
        self.alpha = alpha
        self.seed = seed
        self.clock = clock
        self.progress = progress  # e.g. advances a progress bar; the run never waits on it

    # -- running -------------------------------------------------------------------------
    def _trial(self, name: str) -> dict[str, float]:
        target = self.arms[name]
        started = time.perf_counter()
        value = target() if callable(target) else self.run_config(target)
        wall = time.perf_counter() - started
        if value is None:
            return {TIME_METRIC: wall}
        if isinstance(value, Mapping):
            return {str(k): float(v) for k, v in value.items()}
        try:
            return {self.metric: float(value)}
        except (TypeError, ValueError):
            raise TypeError(
                f"arm {name!r} returned {type(value).__name__}; a trial must return a number, "
                "a dict of numbers, or None (then its wall time is measured)"
            ) from None

    def run(self) -> ExperimentResult:
        names = list(self.arms)
        rng = np.random.default_rng(self.seed)
        for _ in range(self.warmup):
            for index in block_order("abba", len(names), rng)[: len(names)]:
                self._report(names[index], True, 0, self._trial(names[index]))
        records: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        order: list[str] = []
        challengers = [n for n in names if n != self.baseline]
        tests = self._sequential_tests(challengers) if self.sequential else {}
        fed = dict.fromkeys(challengers, 0)
        decisions = dict.fromkeys(challengers, "continue")
        trajectory: dict[str, list[dict[str, float | str]]] = {n: [] for n in challengers}
        started = self.clock()
        stopped_by = f"budget ({self.max_trials} trials per arm)"

        def measure(name: str) -> None:
            records[name].append(self._trial(name))
            order.append(name)
            self._report(name, False, len(order), records[name][-1])

        if self.schedule == "blocked":
            for name in names:
                for _ in range(self.max_trials):
                    measure(name)
        else:
            while True:
                block = block_order(self.schedule, len(names), rng)
                if self.max_trials - min(len(r) for r in records.values()) == 1:
                    block = block[: len(names)]  # half an ABBA block: stay within the budget
                for index in block:
                    measure(names[index])
                self._check_metric(records[self.baseline])
                done = min(len(r) for r in records.values())
                if self.sequential and done >= self.min_trials:
                    for n in challengers:
                        if decisions[n] != "continue":
                            continue
                        a = self._values(records[self.baseline])[fed[n] :]
                        b = self._values(records[n])[fed[n] :]
                        tests[n].update(a, b)
                        fed[n] += len(a)
                        decisions[n] = str(tests[n].decision)
                        trajectory[n].append(_look(fed[n], tests[n]))
                    if all(d != "continue" for d in decisions.values()):
                        stopped_by = f"the sequential test after {done} trials per arm"
                        break
                if done >= self.max_trials:
                    break
                if self.time_budget_s is not None and self.clock() - started > self.time_budget_s:
                    stopped_by = f"the time budget ({self.time_budget_s:g} s)"
                    break
        elapsed = self.clock() - started
        self._check_metric(records[self.baseline])
        samples = {n: _columns(records[n]) for n in names}
        comparisons = {
            n: compare(
                samples[self.baseline][self.metric],
                samples[n][self.metric],
                metric=self.statistic,
                alpha=self.alpha,
                **self._direction(),
            )
            for n in challengers
        }
        if not self.sequential:
            decisions = {n: str(c.decision) for n, c in comparisons.items()}
        anytime = {
            n: {
                "interval": [float(v) for v in tests[n].interval],
                "estimate": float(tests[n].estimate),
                "alpha": float(tests[n].alpha),  # Bonferroni share of alpha per challenger
                "looks": int(tests[n].looks),
                "n": int(fed[n]),
                "decision": decisions[n],
            }
            for n in challengers
            if self.sequential and tests[n].looks
        }
        return ExperimentResult(
            arms=tuple(names),
            baseline=self.baseline,
            metric=self.metric,
            statistic=str(self.statistic),
            samples=samples,
            comparisons=comparisons,
            decisions=decisions,
            stopped_by=stopped_by,
            trajectory=trajectory,
            schedule=self.schedule,
            order=order,
            elapsed_s=float(elapsed),
            anytime=anytime,
        )

    def _report(self, arm: str, warmup: bool, measured: int, values: dict[str, float]) -> None:
        if self.progress is not None:
            budget = self.max_trials * len(self.arms)
            self.progress(TrialDone(arm, warmup, measured, budget, dict(values)))

    def _sequential_tests(self, challengers: list[str]) -> dict[str, Any]:
        # Bonferroni over challengers keeps the family-wise error at alpha for the stop rule.
        alpha = self.alpha / len(challengers)
        options = dict(
            alpha=alpha,
            metric=self.statistic,
            tuning_n=self.max_trials,  # narrowest interval at the budget, the planned horizon
            min_n=max(2, self.min_trials),
            **self._direction(),
        )
        return {n: SequentialTest(**options) for n in challengers}

    def _check_metric(self, records: list[dict[str, float]]) -> None:
        if records and self.metric not in records[0]:
            found = ", ".join(sorted(records[0])) or "none"
            raise ValueError(
                f"metric {self.metric!r} was not measured; trials returned: {found}. "
                "Pass metric= with one of those names."
            )

    def _direction(self) -> dict[str, bool]:
        return {"higher_is_better": self.higher_is_better}

    def _values(self, records: list[dict[str, float]]) -> np.ndarray:
        return np.array([r[self.metric] for r in records if self.metric in r], dtype=float)


def _columns(records: list[dict[str, float]]) -> dict[str, np.ndarray]:
    keys = sorted({k for r in records for k in r})
    return {k: np.array([r[k] for r in records if k in r], dtype=float) for k in keys}


def _look(n: int, test: Any) -> dict[str, float | str]:
    """One point of the sequential trajectory: samples per arm, interval, decision."""
    point: dict[str, float | str] = {"n": n, "decision": str(test.decision)}
    point["estimate"] = float(getattr(test, "estimate", np.nan))
    interval = getattr(test, "interval", None)
    if callable(interval):
        interval = interval()
    if interval is not None:
        low, high = interval
        point["low"], point["high"] = float(low), float(high)
    return point
