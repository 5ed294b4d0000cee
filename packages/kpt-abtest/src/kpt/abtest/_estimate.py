"""A difference estimate with its standard error, and how it becomes an interval and a p-value."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """est_b - est_a with standard errors; df=inf means a normal reference distribution."""

    est_a: float
    est_b: float
    se_a: float
    se_b: float
    se_diff: float
    df: float = np.inf
    cov_ab: float = 0.0  # covariance of the two estimates (paired designs)
    se_null: float | None = None  # SE under the null when it differs (pooled proportions)

    @property
    def effect(self) -> float:
        return self.est_b - self.est_a

    def critical(self, alpha: float) -> float:
        if np.isinf(self.df):
            return float(stats.norm.ppf(1 - alpha / 2))
        return float(stats.t.ppf(1 - alpha / 2, self.df))

    def ci(self, alpha: float) -> tuple[float, float]:
        half = self.critical(alpha) * self.se_diff
        return (self.effect - half, self.effect + half)

    def p_value(self) -> float:
        se = self.se_diff if self.se_null is None else self.se_null
        if se == 0.0:
            # Zero variance in both arms: the difference is known exactly.
            return 1.0 if self.effect == 0.0 else 0.0
        t = abs(self.effect) / se
        if np.isinf(self.df):
            return float(2 * stats.norm.sf(t))
        return float(2 * stats.t.sf(t, self.df))

    def relative(self, alpha: float) -> tuple[float, tuple[float, float]]:
        """(b - a) / a and a delta-method interval; NaN when a's estimate is 0."""
        a, b = self.est_a, self.est_b
        if a == 0.0:
            return float("nan"), (float("nan"), float("nan"))
        rel = b / a - 1.0
        var = self.se_b**2 / a**2 + b**2 * self.se_a**2 / a**4 - 2 * b * self.cov_ab / a**3
        half = self.critical(alpha) * float(np.sqrt(max(var, 0.0)))
        return rel, (rel - half, rel + half)
