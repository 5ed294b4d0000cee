"""The Comparison result every fixed-horizon test returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DECISIONS = ("b_better", "a_better", "no_difference")


def decide(low: float, high: float, higher_is_better: bool) -> str:
    """Direction from a (1 - alpha) interval for b - a: significant only if it excludes 0."""
    if low > 0:
        return "b_better" if higher_is_better else "a_better"
    if high < 0:
        return "a_better" if higher_is_better else "b_better"
    return "no_difference"


def metric_label(metric) -> str:
    return f"q{metric:g}" if isinstance(metric, float) else str(metric)


def _plain(value):
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class Comparison:
    """Outcome of comparing arm b against arm a; effect is b - a."""

    metric: str
    method: str
    estimate_a: float
    estimate_b: float
    effect: float
    relative_effect: float
    relative_ci: tuple[float, float]
    ci: tuple[float, float]
    p_value: float
    alpha: float
    decision: str
    n_a: int
    n_b: int
    higher_is_better: bool = False
    # Which interval `ci` is: the method's own (a rank test gets the Hodges-Lehmann / Moses
    # interval, a bootstrap its bootstrap interval), so p-value and interval agree.
    interval: str = "Welch t"
    effect_name: str = "b - a"  # what `effect` measures, e.g. "Hodges-Lehmann shift b - a"

    def to_dict(self) -> dict:
        """JSON-able fields plus the summary sentence (what write_report / to_json save)."""
        out = {name: _plain(getattr(self, name)) for name in self.__dataclass_fields__}
        out["summary"] = self.summary()
        return out

    def summary(self) -> str:
        """One plain-language paragraph a person can paste into a report."""
        level = f"{100 * (1 - self.alpha):g}%"
        rel = self.relative_effect
        rel_text = "n/a" if not np.isfinite(rel) else f"{100 * rel:+.2f}%"
        lo, hi = self.ci
        head = (
            f"{self.metric} of b is {self.estimate_b:.6g} vs {self.estimate_a:.6g} for a "
            f"({self.effect_name} = {self.effect:+.6g}, {rel_text}; {level} {self.interval} "
            f"interval [{lo:.6g}, {hi:.6g}]; p = {self.p_value:.3g}; {self.method}; "
            f"n = {self.n_a} / {self.n_b})."
        )
        better = "higher" if self.higher_is_better else "lower"
        if self.decision == "no_difference":
            verdict = f"No significant difference at alpha = {self.alpha:g}."
        else:
            winner = "b" if self.decision == "b_better" else "a"
            verdict = f"{winner} is significantly better ({better} is better)."
        return f"{head} {verdict}"
