"""Sample-size planning: Welch-aware means, two proportions, and quantiles by simulation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import optimize, stats

from kpt.abtest._quantiles import quantiles_with_se
from kpt.abtest._validate import check_alpha, parse_quantile

_MAX_N = 10**9


def _check_power(power: float) -> float:
    power = float(power)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power={power!r} must lie strictly between 0 and 1, e.g. 0.8")
    return power


def _check_sd(sd, name: str) -> float:
    if sd is None or not np.isfinite(sd) or sd <= 0:
        raise ValueError(f"{name}={sd!r} must be a positive finite standard deviation")
    return float(sd)


def power_mean(effect: float, n: float, sd: float, *, alpha=0.05, sd_b=None, ratio=1.0) -> float:
    """Power of the two-sided Welch test with n in arm a and ratio * n in arm b."""
    sd_a = _check_sd(sd, "sd")
    sd_b = sd_a if sd_b is None else _check_sd(sd_b, "sd_b")
    n_a, n_b = float(n), float(n) * ratio
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    ncp = abs(effect) / np.sqrt(va + vb)
    crit = stats.t.ppf(1 - alpha / 2, df)
    p = float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))
    # scipy's noncentral t returns NaN far in the tail, where power is 1 for all purposes.
    return p if np.isfinite(p) else float(ncp > crit)


def power_proportion(p_a: float, p_b: float, n: float, *, alpha=0.05, ratio=1.0) -> float:
    """Power of the pooled two-proportion z test (normal approximation)."""
    n_a, n_b = float(n), float(n) * ratio
    pooled = (p_a * n_a + p_b * n_b) / (n_a + n_b)
    se0 = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    se1 = np.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    z = stats.norm.ppf(1 - alpha / 2)
    d = abs(p_b - p_a)
    return float(stats.norm.sf((z * se0 - d) / se1) + stats.norm.cdf((-z * se0 - d) / se1))


def power_quantile(
    effect: float, n: int, q: float, sampler: Callable, *, alpha=0.05, reps=400, seed=0
) -> float:
    """Simulated power of the order-statistic quantile test when b = a's distribution + effect."""
    rng = np.random.default_rng(seed)
    a = np.asarray(sampler(rng, (reps, n)), dtype=np.float64)
    b = np.asarray(sampler(rng, (reps, n)), dtype=np.float64) + effect
    ea, sa = quantiles_with_se(a, [q], alpha)
    eb, sb = quantiles_with_se(b, [q], alpha)
    z = stats.norm.ppf(1 - alpha / 2)
    return float(np.mean(np.abs(eb - ea)[:, 0] > z * np.hypot(sa, sb)[:, 0]))


def _smallest_n(power_at: Callable[[int], float], target: float, start: int = 4) -> int:
    """Smallest integer n with power_at(n) >= target (power increases with n)."""
    hi = start
    while power_at(hi) < target:
        hi *= 2
        if hi > _MAX_N:
            raise ValueError("the planned power needs more than 1e9 samples per arm; "
                             "is the effect tiny or the sd huge?")  # fmt: skip
    lo = max(2, hi // 2)
    while lo < hi:
        mid = (lo + hi) // 2
        if power_at(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return hi


def sample_size(
    effect: float,
    sd: float | None = None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    metric="mean",
    sd_b: float | None = None,
    ratio: float = 1.0,
    baseline: float | None = None,
    sampler: Callable | None = None,
    reps: int = 400,
    seed: int = 0,
) -> int:
    """Samples per arm (arm a; arm b gets ratio * n) to detect `effect` (b - a) with `power`.

    metric="mean": exact Welch power (noncentral t), sd of a and optional sd_b.
    metric="proportion": baseline is a's rate; b's rate is baseline + effect.
    metric a quantile ("p95", 0.99): simulated with sampler(rng, shape) drawing a's values,
    b shifted by effect; reps simulations per candidate n.
    """
    alpha, power = check_alpha(alpha), _check_power(power)
    if not np.isfinite(effect) or effect == 0:
        raise ValueError(f"effect={effect!r} must be a nonzero finite difference (b - a)")
    if ratio <= 0:
        raise ValueError(f"ratio={ratio!r} must be positive (n_b / n_a)")
    if metric == "mean":
        _check_sd(sd, "sd")
        return _smallest_n(
            lambda n: power_mean(effect, n, sd, alpha=alpha, sd_b=sd_b, ratio=ratio), power
        )
    if metric == "proportion":
        if baseline is None or not 0 < baseline < 1 or not 0 < baseline + effect < 1:
            raise ValueError(
                "metric='proportion' needs baseline in (0, 1) with baseline + effect in (0, 1); "
                f"got baseline={baseline!r}, effect={effect!r}"
            )
        p_b = baseline + effect
        return _smallest_n(
            lambda n: power_proportion(baseline, p_b, n, alpha=alpha, ratio=ratio), power
        )
    q = parse_quantile(metric)
    if q is None:
        raise ValueError(f"metric={metric!r}: use 'mean', 'proportion' or a quantile like 'p95'")
    if sampler is None:
        raise ValueError("quantile sample sizes are simulated: pass sampler=lambda rng, shape: "
                         "rng.lognormal(0, 1, shape) (a's distribution)")  # fmt: skip
    start = int(np.ceil(60 / min(q, 1 - q)))  # the order-statistic interval needs this many
    # Simulated power is noisy; aiming 1.64 MC standard errors higher keeps the plan from
    # landing below the target because of a lucky simulation.
    aim = min(power + 1.64 * np.sqrt(power * (1 - power) / reps), 0.999)
    return _smallest_n(
        lambda n: power_quantile(effect, n, q, sampler, alpha=alpha, reps=reps, seed=seed),
        aim,
        start=start,
    )


def minimum_detectable_effect(
    n: int,
    sd: float | None = None,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    metric="mean",
    sd_b: float | None = None,
    ratio: float = 1.0,
    baseline: float | None = None,
) -> float:
    """Smallest |b - a| that n per arm detects with `power` (means or proportions)."""
    alpha, power = check_alpha(alpha), _check_power(power)
    if n < 2:
        raise ValueError(f"n={n!r} must be at least 2 per arm")
    if metric == "mean":
        sd = _check_sd(sd, "sd")
        sd_b_ = sd if sd_b is None else sd_b
        scale = 10 * np.sqrt(sd**2 / n + sd_b_**2 / (n * ratio))
        return float(optimize.brentq(
            lambda d: power_mean(d, n, sd, alpha=alpha, sd_b=sd_b, ratio=ratio) - power,
            1e-12 * sd, scale,
        ))  # fmt: skip
    if metric == "proportion":
        if baseline is None or not 0 < baseline < 1:
            raise ValueError(f"metric='proportion' needs baseline in (0, 1), got {baseline!r}")
        hi = 1 - baseline - 1e-9
        if power_proportion(baseline, baseline + hi, n, alpha=alpha, ratio=ratio) < power:
            raise ValueError(f"n={n} cannot reach power {power} for any increase over {baseline}")
        return float(optimize.brentq(
            lambda d: power_proportion(baseline, baseline + d, n, alpha=alpha, ratio=ratio) - power,
            1e-12, hi,
        ))  # fmt: skip
    raise ValueError(
        f"metric={metric!r}: minimum_detectable_effect supports 'mean' and 'proportion'"
    )
