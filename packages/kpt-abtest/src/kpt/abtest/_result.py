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

    def summary(self) -> str:
        """One plain-language paragraph a person can paste into a report."""
        level = f"{100 * (1 - self.alpha):g}%"
        rel = self.relative_effect
        rel_text = "n/a" if not np.isfinite(rel) else f"{100 * rel:+.2f}%"
        lo, hi = self.ci
        head = (
            f"{self.metric} of b is {self.estimate_b:.6g} vs {self.estimate_a:.6g} for a "
            f"(b - a = {self.effect:+.6g}, {rel_text}; {level} CI [{lo:.6g}, {hi:.6g}]; "
            f"p = {self.p_value:.3g}; {self.method}; n = {self.n_a} / {self.n_b})."
        )
        better = "higher" if self.higher_is_better else "lower"
        if self.decision == "no_difference":
            verdict = f"No significant difference at alpha = {self.alpha:g}."
        else:
            winner = "b" if self.decision == "b_better" else "a"
            verdict = f"{winner} is significantly better ({better} is better)."
        return f"{head} {verdict}"
