"""Vectorized bootstrap intervals (percentile and BCa) for one sample or a difference of two.

Resamples are drawn as index matrices in chunks that bound memory (about 2e7 indices at
once), and the statistic runs along the last axis of each chunk: no Python loop per resample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from kpt.abtest._validate import as_sample, check_alpha, check_paired, check_positive_int

Statistic = Callable[..., np.ndarray]  # called as statistic(x, axis=-1)
_CHUNK_ELEMENTS = 20_000_000
_JACKKNIFE_GROUPS = 1000


@dataclass(frozen=True)
class BootstrapResult:
    estimate: float
    ci: tuple[float, float]
    standard_error: float
    p_value: float  # two-sided, for "difference is 0", from the bootstrap distribution
    method: str


def _index_chunks(n: int, n_resamples: int, rng):
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        yield start, stop, rng.integers(0, n, size=(stop - start, n), dtype=np.int64)


def _resample_stats(x: np.ndarray, statistic: Statistic, n_resamples: int, rng) -> np.ndarray:
    out = np.empty(n_resamples)
    for start, stop, idx in _index_chunks(x.size, n_resamples, rng):
        out[start:stop] = statistic(x[idx], axis=-1)
    return out


def draws(a, b, statistic: Statistic, n_resamples: int, rng, *, paired: bool = False):
    """Bootstrap replicates of statistic(a) and statistic(b); paired draws share indices."""
    if not paired:
        return (
            _resample_stats(a, statistic, n_resamples, rng),
            _resample_stats(b, statistic, n_resamples, rng),
        )
    out_a, out_b = np.empty(n_resamples), np.empty(n_resamples)
    for start, stop, idx in _index_chunks(a.size, n_resamples, rng):
        out_a[start:stop] = statistic(a[idx], axis=-1)
        out_b[start:stop] = statistic(b[idx], axis=-1)
    return out_a, out_b


def _jackknife(x: np.ndarray, statistic: Statistic, rng) -> np.ndarray:
    """Leave-one-out statistics; grouped (delete-d) above 1000 points to stay linear in n."""
    n = x.size
    if n <= _JACKKNIFE_GROUPS:
        keep = ~np.eye(n, dtype=bool)
        return statistic(np.broadcast_to(x, (n, n))[keep].reshape(n, n - 1), axis=-1)
    groups = np.array_split(rng.permutation(n), _JACKKNIFE_GROUPS)
    return np.array([statistic(np.delete(x, g), axis=-1) for g in groups])


def _acceleration(jack: np.ndarray) -> float:
    d = jack.mean() - jack
    denom = 6.0 * (d**2).sum() ** 1.5
    return float((d**3).sum() / denom) if denom > 0 else 0.0


def bootstrap(
    a,
    b=None,
    *,
    statistic: Statistic = np.mean,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    method: str = "bca",
    paired: bool = False,
    seed=None,
) -> BootstrapResult:
    """Bootstrap interval for statistic(a), or for statistic(b) - statistic(a) if b is given.

    `statistic` must accept an `axis` keyword (np.mean, np.median, a lambda around np.quantile).
    paired=True resamples matched units (same index in a and b) together.
    """
    alpha = check_alpha(alpha)
    n_resamples = check_positive_int(n_resamples, "n_resamples", minimum=100)
    if method not in ("bca", "percentile"):
        raise ValueError(f"method={method!r}: choose 'bca' or 'percentile'")
    rng = np.random.default_rng(seed)
    a = as_sample(a, "a")
    if b is None:
        estimate = float(statistic(a, axis=-1))
        boot = _resample_stats(a, statistic, n_resamples, rng)
        jack = _jackknife(a, statistic, rng) if method == "bca" else None
    else:
        b = as_sample(b, "b")
        if paired:
            check_paired(a, b)
        estimate = float(statistic(b, axis=-1) - statistic(a, axis=-1))
        boot_a, boot_b = draws(a, b, statistic, n_resamples, rng, paired=paired)
        boot = boot_b - boot_a
        jack = _two_sample_jackknife(a, b, statistic, rng, paired) if method == "bca" else None
    return _interval(estimate, boot, jack, alpha, method)


def _two_sample_jackknife(a, b, statistic, rng, paired: bool) -> np.ndarray:
    if paired:
        # Leaving out a pair; the statistic of a difference of statistics over the pairs.
        pairs = np.stack([a, b])

        def diff(x, axis=-1):
            return statistic(x[..., 1, :] if x.ndim > 2 else x[1], axis=-1) - statistic(
                x[..., 0, :] if x.ndim > 2 else x[0], axis=-1
            )

        n = a.size
        groups = np.array_split(rng.permutation(n), min(n, _JACKKNIFE_GROUPS))
        return np.array([diff(np.delete(pairs, g, axis=1)) for g in groups])
    # As scipy does for several samples: leave-one-out over either sample in turn.
    sb, sa = float(statistic(b, axis=-1)), float(statistic(a, axis=-1))
    return np.concatenate([sb - _jackknife(a, statistic, rng), _jackknife(b, statistic, rng) - sa])


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
