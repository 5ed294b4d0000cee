"""Vectorized bootstrap intervals (percentile and BCa) for one sample or a difference of two.

Replicates come from _resample.py: exact O(1)-per-resample draws for quantiles, int32 index
blocks of bounded size (~2e6 entries) for other statistics, with the statistic along the last
axis of each block: no Python loop per resample, memory bounded whatever n_resamples is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from kpt.abtest._resample import (
    Statistic,
    as_statistic,
    jackknife,
    paired_replicates,
    replicates,
)
from kpt.abtest._validate import as_sample, check_alpha, check_paired, check_positive_int


@dataclass(frozen=True)
class BootstrapResult:
    estimate: float
    ci: tuple[float, float]
    standard_error: float
    p_value: float  # two-sided, for "difference is 0", from the bootstrap distribution
    method: str


def draws(a, b, statistic: Statistic, n_resamples: int, rng, *, paired: bool = False):
    """Bootstrap replicates of statistic(a) and statistic(b); paired draws share indices."""
    if paired:
        return paired_replicates(a, b, statistic, n_resamples, rng)
    return replicates(a, statistic, n_resamples, rng), replicates(b, statistic, n_resamples, rng)


def _acceleration(jack: np.ndarray) -> float:
    d = jack.mean() - jack
    denom = 6.0 * (d**2).sum() ** 1.5
    return float((d**3).sum() / denom) if denom > 0 else 0.0


def bootstrap(
    a,
    b=None,
    *,
    statistic: Statistic | str | float = np.mean,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    method: str = "bca",
    paired: bool = False,
    seed=None,
) -> BootstrapResult:
    """Bootstrap interval for statistic(a), or for statistic(b) - statistic(a) if b is given.

    `statistic`: "mean", "median", "p95", a quantile level, or a callable taking `axis`
    (np.mean, np.median, a lambda around np.quantile). Named quantiles use exact order-statistic
    draws (milliseconds for any n). paired=True resamples matched units together.
    """
    return bootstrap_with_replicates(
        a, b, statistic=statistic, n_resamples=n_resamples, alpha=alpha, method=method,
        paired=paired, seed=seed,
    )[0]  # fmt: skip


def bootstrap_with_replicates(
    a, b=None, *, statistic=np.mean, n_resamples=10_000, alpha=0.05, method="bca",
    paired=False, seed=None,
):  # fmt: skip
    """bootstrap() plus the replicates of each arm (b's is None for one sample)."""
    alpha = check_alpha(alpha)
    n_resamples = check_positive_int(n_resamples, "n_resamples", minimum=100)
    if method not in ("bca", "percentile"):
        raise ValueError(f"method={method!r}: choose 'bca' or 'percentile'")
    statistic = as_statistic(statistic)
    rng = np.random.default_rng(seed)
    a = as_sample(a, "a")
    if b is None:
        estimate = float(statistic(a, axis=-1))
        boot_a = boot = replicates(a, statistic, n_resamples, rng)
        boot_b = None
        jack = jackknife(a, statistic, rng) if method == "bca" else None
    else:
        b = as_sample(b, "b")
        if paired:
            check_paired(a, b)
        estimate = float(statistic(b, axis=-1) - statistic(a, axis=-1))
        boot_a, boot_b = draws(a, b, statistic, n_resamples, rng, paired=paired)
        boot = boot_b - boot_a
        jack = _two_sample_jackknife(a, b, statistic, rng, paired) if method == "bca" else None
    return _interval(estimate, boot, jack, alpha, method), boot_a, boot_b


def _two_sample_jackknife(a, b, statistic, rng, paired: bool) -> np.ndarray:
    if paired and statistic is np.mean:  # the mean of b - a over pairs: exact and O(n)
        return jackknife(b, statistic, rng) - jackknife(a, statistic, rng)
    if paired:
        # Leaving out a pair; the statistic of a difference of statistics over the pairs.
        pairs = np.stack([a, b])

        def diff(x, axis=-1):
            return statistic(x[..., 1, :] if x.ndim > 2 else x[1], axis=-1) - statistic(
                x[..., 0, :] if x.ndim > 2 else x[0], axis=-1
            )

        n = a.size
        groups = np.array_split(rng.permutation(n), min(n, 1000))
        return np.array([diff(np.delete(pairs, g, axis=1)) for g in groups])
    # As scipy does for several samples: leave-one-out over either sample in turn.
    sb, sa = float(statistic(b, axis=-1)), float(statistic(a, axis=-1))
    return np.concatenate([sb - jackknife(a, statistic, rng), jackknife(b, statistic, rng) - sa])


def _interval(estimate: float, boot: np.ndarray, jack, alpha: float, method: str):
    n_resamples = boot.size
    levels = np.array([alpha / 2, 1 - alpha / 2])
    if method == "bca":
        frac_below = np.count_nonzero(boot < estimate) + 0.5 * np.count_nonzero(boot == estimate)
        z0 = stats.norm.ppf(np.clip(frac_below / n_resamples, 1e-10, 1 - 1e-10))
        acc = _acceleration(jack)
        zl = stats.norm.ppf(levels)
        levels = stats.norm.cdf(z0 + (z0 + zl) / (1 - acc * (z0 + zl)))
    low, high = np.quantile(boot, levels)
    # +1 counts the observed data as one resample, so p is never exactly 0.
    tail = min(np.count_nonzero(boot <= 0), np.count_nonzero(boot >= 0))
    p_value = float(min(1.0, 2 * (tail + 1) / (n_resamples + 1)))
    se = float(boot.std(ddof=1))
    return BootstrapResult(estimate, (float(low), float(high)), se, p_value, method)
