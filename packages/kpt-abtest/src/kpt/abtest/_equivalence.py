"""Non-inferiority and equivalence (TOST) on means or quantiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from kpt.abtest._classical import welch
from kpt.abtest._estimate import Estimate
from kpt.abtest._quantiles import order_stat_supported, quantiles_with_se
from kpt.abtest._validate import as_sample, check_alpha, parse_quantile


@dataclass(frozen=True)
class MarginTest:
    kind: str  # "equivalence" or "non_inferiority"
    effect: float  # b - a
    margin: float
    ci: tuple[float, float]  # the (1 - 2 alpha) interval, the one TOST inverts
    p_value: float
    alpha: float
    passed: bool  # equivalent / non-inferior at level alpha


def _estimate(a, b, metric) -> Estimate:
    a, b = as_sample(a, "a"), as_sample(b, "b")
    q = parse_quantile(metric)
    if q is None:
        if metric != "mean":
            raise ValueError(f"metric={metric!r}: margin tests support 'mean' and quantiles")
        return welch(a, b)
    if not (order_stat_supported(a.size, q, 0.05) and order_stat_supported(b.size, q, 0.05)):
        raise ValueError(f"n = {a.size} / {b.size} is too small for a q={q:g} margin test")
    (ea,), (sa,) = quantiles_with_se(a, [q])
    (eb,), (sb,) = quantiles_with_se(b, [q])
    return Estimate(float(ea), float(eb), float(sa), float(sb), float(np.hypot(sa, sb)))


def _dist(est: Estimate):
    return stats.norm if np.isinf(est.df) else stats.t(est.df)


def _check_margin(margin: float) -> float:
    if not np.isfinite(margin) or margin <= 0:
        raise ValueError(f"margin={margin!r} must be a positive effect size in the metric's units")
    return float(margin)


def equivalence(a, b, margin: float, *, metric="mean", alpha: float = 0.05) -> MarginTest:
    """TOST: b and a are equivalent if b - a is shown to lie inside (-margin, +margin)."""
    alpha, margin = check_alpha(alpha), _check_margin(margin)
    est = _estimate(a, b, metric)
    dist, se, d = _dist(est), max(est.se_diff, 1e-300), est.effect
    p = max(float(dist.sf((d + margin) / se)), float(dist.cdf((d - margin) / se)))
    half = float(dist.ppf(1 - alpha)) * est.se_diff
    return MarginTest("equivalence", d, margin, (d - half, d + half), p, alpha, p < alpha)


def non_inferiority(
    a, b, margin: float, *, metric="mean", alpha: float = 0.05, higher_is_better: bool = False
) -> MarginTest:
    """One-sided test that b is worse than a by less than `margin` (direction as in compare)."""
    alpha, margin = check_alpha(alpha), _check_margin(margin)
    est = _estimate(a, b, metric)
    dist, se, d = _dist(est), max(est.se_diff, 1e-300), est.effect
    if higher_is_better:  # worse means lower: H0 is b - a <= -margin
        p = float(dist.sf((d + margin) / se))
    else:  # worse means higher (latency): H0 is b - a >= margin
        p = float(dist.cdf((d - margin) / se))
    half = float(dist.ppf(1 - alpha)) * est.se_diff
    return MarginTest("non_inferiority", d, margin, (d - half, d + half), p, alpha, p < alpha)
