"""Anytime-valid sequential tests: look after every batch, stop for efficacy or futility.

Means and paired differences use the normal-mixture confidence sequence (Robbins' mixture,
as in Howard et al. 2021 and the asymptotic CS of Waudby-Smith et al. 2024) with a plug-in
standard error: the mixture martingale exp(S^2 / 2(V + r)) * sqrt(r / (V + r)) exceeds 1/alpha
with probability at most alpha at ANY time (Ville), so checking after every batch is allowed.
Quantile differences use the same boundary on the difference of sample quantiles with its
order-statistic standard error: an asymptotic confidence sequence (Waudby-Smith et al. 2024),
valid because sample quantiles are asymptotically linear (Bahadur) like means. It replaced an
exact per-arm beta-binomial mixture combined by Bonferroni, whose A/A rate was ~0 and which
detected a 30% p95 shift on lognormal data 4% of the time where this one does 33%
(benchmarks/bench_stats.py). No stop happens before the order-statistic interval exists
(about 20 / min(q, 1 - q) values per arm).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from kpt.abtest._design import truncated_design
from kpt.abtest._quantiles import order_stat_supported, quantiles_with_se
from kpt.abtest._validate import check_alpha, check_paired, check_positive_int, parse_quantile

DECISIONS = ("continue", "b_better", "a_better", "futility", "inconclusive")


def mixture_scale(alpha: float, tuning_n: float) -> float:
    """The mixture parameter m (in samples) that makes the interval narrowest at tuning_n."""
    log_term = 2 * np.log(1 / alpha)

    def width(log_x: float) -> float:
        x = np.exp(log_x)  # x = n / m
        return (1 + 1 / x) * (np.log1p(x) + log_term)

    best = optimize.minimize_scalar(width, bounds=(-10, 10), method="bounded")
    return float(tuning_n / np.exp(best.x))


def normal_mixture_radius(se, n_eff, alpha: float, m: float):
    """Half-width of the anytime-valid interval: se * sqrt((1 + m/n)(log(1 + n/m) + 2 log 1/a)).

    Vectorized over se and n_eff so Monte Carlo checks and the test share one formula.
    """
    n_eff = np.asarray(n_eff, dtype=np.float64)
    ratio = m / n_eff
    return se * np.sqrt((1 + ratio) * (np.log1p(1 / ratio) + 2 * np.log(1 / alpha)))


class _Moments:
    """Running count, mean and sum of squared deviations (Chan's parallel update)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        n_b, mean_b = x.size, float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta**2 * self.n * n_b / n
        self.n = n

    @property
    def var(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else np.inf


class SequentialTest:
    """Compare b against a as batches arrive; `decision` is valid whenever you read it.

    metric: "mean" (default) or a quantile ("median", "p95", 0.99). paired=True tests the mean
    of b - a over matched units (batches must pair up). min_effect: stop for futility once the
    interval for b - a lies inside (-min_effect, +min_effect). max_n: per-arm budget after
    which the decision becomes "inconclusive". tuning_n: the per-arm size where the interval
    is narrowest (the planned fixed-horizon n is a good choice). min_n: per-arm samples before
    any stop, so the plug-in standard error has settled.

    plan_n: the fixed-horizon per-arm n that reaches `power` at the planned effect (from
    sample_size). Giving it switches to the truncated design of _design.py: a line boundary
    that may be checked after every observation up to max_n = ~1.2 plan_n (set by the
    design), with the least average n at the planned effect (~0.74 plan_n at alpha 0.05,
    power 0.8, vs ~1.1 for the open-ended mixture) and the planned power. Reaching max_n
    without crossing gives "inconclusive": no effect of the planned size was found.
    look_every: the per-arm batch you plan between looks; the design keeps its power at that
    spacing (Siegmund's correction). Looking more often stays valid, it only costs power.
    """

    def __init__(
        self,
        alpha: float = 0.05,
        *,
        metric="mean",
        paired: bool = False,
        higher_is_better: bool = False,
        min_effect: float | None = None,
        max_n: int | None = None,
        tuning_n: int = 1000,
        min_n: int = 20,
        plan_n: int | None = None,
        power: float = 0.8,
        look_every: int = 1,
    ) -> None:
        self.alpha = check_alpha(alpha)
        self.quantile = parse_quantile(metric)
        if self.quantile is None and metric != "mean":
            raise ValueError(f"metric={metric!r}: SequentialTest supports 'mean' and quantiles")
        if paired and self.quantile is not None:
            raise ValueError("paired=True is for the mean of differences; use metric='mean'")
        if min_effect is not None and not min_effect > 0:
            raise ValueError(f"min_effect={min_effect!r} must be a positive effect size")
        if tuning_n < 1 or min_n < 2:
            raise ValueError(f"tuning_n={tuning_n!r} must be >= 1 and min_n={min_n!r} >= 2")
        self._design = None
        if plan_n is not None:
            if int(plan_n) != plan_n or plan_n < min_n:
                raise ValueError(f"plan_n={plan_n!r} must be an integer >= min_n={min_n}; "
                                 "use sample_size(effect, sd, alpha, power)")  # fmt: skip
            if max_n is not None:
                raise ValueError(f"max_n={max_n!r} and plan_n={plan_n!r} both given: the design "
                                 "sets max_n from plan_n; drop max_n")  # fmt: skip
            look_every = check_positive_int(look_every, "look_every")
            ratio = round(look_every / plan_n, 4)
            if not 0.0 < power < 1.0:
                raise ValueError(f"power={power!r} must lie strictly between 0 and 1, e.g. 0.8")
            self._design = truncated_design(self.alpha, float(power), ratio)
            max_n = int(np.ceil(self._design.max_ratio * plan_n))
        self.metric = metric
        self.paired, self.higher_is_better = paired, higher_is_better
        self.min_effect, self.max_n, self.min_n = min_effect, max_n, min_n
        self._m = mixture_scale(self.alpha, tuning_n)
        self._a, self._b, self._d = _Moments(), _Moments(), _Moments()
        self._values_a: list[np.ndarray] = []
        self._values_b: list[np.ndarray] = []
        self.interval: tuple[float, float] = (-np.inf, np.inf)
        self.estimate: float = np.nan
        self.decision: str = "continue"
        self.looks = 0

    @property
    def n_a(self) -> int:
        return self._a.n

    @property
    def n_b(self) -> int:
        return self._b.n

    def update(self, a_batch, b_batch) -> str:
        """Add a batch from each arm (either may be empty unless paired); returns the decision."""
        a = np.asarray(a_batch, dtype=np.float64).reshape(-1)
        b = np.asarray(b_batch, dtype=np.float64).reshape(-1)
        for name, x in (("a", a), ("b", b)):
            if not np.isfinite(x).all():
                raise ValueError(f"batch for arm {name} holds NaN/inf; drop them before update()")
        if self.paired:
            check_paired(a, b)
            self._d.add(b - a)
        self._a.add(a)
        self._b.add(b)
        if self.quantile is not None:
            self._values_a.append(a)
            self._values_b.append(b)
        if self.decision == "continue":  # once stopped, the verdict stands
            self.looks += 1
            self._refresh()
        return self.decision

    def _refresh(self) -> None:
        if min(self.n_a, self.n_b) < self.min_n:
            return
        if self.quantile is None:
            low, high = self._mean_interval()
        else:
            low, high = self._quantile_interval()
        self.interval = (float(low), float(high))
        self.decision = self._decide(low, high)

    def _radius(self, se: float, n: float) -> float:
        if self._design is None:
            return float(normal_mixture_radius(se, n, self.alpha, self._m))
        return float(se * self._design.z_boundary(n / self.max_n))

    def _mean_interval(self) -> tuple[float, float]:
        if self.paired:
            n, est, se = self._d.n, self._d.mean, np.sqrt(self._d.var / self._d.n)
        else:
            na, nb = self._a.n, self._b.n
            est = self._b.mean - self._a.mean
            se = np.sqrt(self._a.var / na + self._b.var / nb)
            n = 2.0 / (1.0 / na + 1.0 / nb)  # equals n per arm when balanced
        self.estimate = float(est)
        radius = self._radius(se, n)
        return est - radius, est + radius

    def _quantile_interval(self) -> tuple[float, float]:
        q = self.quantile
        xa, xb = np.concatenate(self._values_a), np.concatenate(self._values_b)
        self._values_a, self._values_b = [xa], [xb]
        if not (order_stat_supported(xa.size, q, 0.05) and order_stat_supported(xb.size, q, 0.05)):
            # Too few values in a tail to estimate its spread: the point estimate exists (plots
            # and reports show it), the interval does not yet.
            self.estimate = float(np.quantile(xb, q) - np.quantile(xa, q))
            return -np.inf, np.inf
        (est_a,), (se_a,) = quantiles_with_se(xa, [q])
        (est_b,), (se_b,) = quantiles_with_se(xb, [q])
        est = float(est_b - est_a)
        self.estimate = est
        radius = self._radius(float(np.hypot(se_a, se_b)), 2.0 / (1.0 / xa.size + 1.0 / xb.size))
        return est - radius, est + radius

    def _decide(self, low: float, high: float) -> str:
        if low > 0 or high < 0:
            b_higher = low > 0
            return "b_better" if b_higher == self.higher_is_better else "a_better"
        if self.min_effect is not None and -self.min_effect < low and high < self.min_effect:
            return "futility"
        if self.max_n is not None and min(self.n_a, self.n_b) >= self.max_n:
            return "inconclusive"
        return "continue"

    def __repr__(self) -> str:
        lo, hi = self.interval
        return (f"SequentialTest(metric={self.metric!r}, n={self.n_a}/{self.n_b}, "
                f"interval=({lo:.4g}, {hi:.4g}), decision={self.decision!r})")  # fmt: skip
