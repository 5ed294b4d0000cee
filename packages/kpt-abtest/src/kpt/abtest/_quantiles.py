"""Quantile estimates with order-statistic standard errors, fast enough for 1e7 samples.

The distribution-free interval for the q-quantile runs between the order statistics at ranks
n*q -/+ z*sqrt(n*q*(1-q)) (normal approximation to the binomial count below the quantile).
Half its width over z is a consistent standard error that needs no density estimate, so a
difference of quantiles gets a normal interval. Every rank is found in one selection pass
(_select.py), never a sort.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from kpt.abtest._select import select_ranks


def _ranks(n: int, q: float, z: float) -> tuple[int, int, int, int, float]:
    h = (n - 1) * q
    lo_i, hi_i = int(np.floor(h)), int(np.ceil(h))
    spread = z * np.sqrt(n * q * (1 - q))
    # Ranks are 1-based counts; -1 turns them into 0-based indices.
    lower = int(np.floor(n * q - spread)) - 1
    upper = int(np.ceil(n * q + spread))
    return lo_i, hi_i, lower, upper, h - lo_i


def order_stat_supported(n: int, q: float, alpha: float) -> bool:
    """Whether n is large enough for the order-statistic interval at this q and alpha."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    _, _, lower, upper, _ = _ranks(n, q, z)
    return lower >= 0 and upper <= n - 1 and n >= 50


def quantiles_with_se(x: np.ndarray, qs, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Estimates (numpy's linear rule) and standard errors of quantiles `qs` along the last axis.

    Works on a batch of samples, shape (..., n), so Monte Carlo checks run vectorized.
    Returns NaN standard errors where n is too small for the order-statistic interval.
    """
    qs = np.atleast_1d(np.asarray(qs, dtype=np.float64))
    n = x.shape[-1]
    z = float(stats.norm.ppf(1 - alpha / 2))
    plans = [_ranks(n, q, z) for q in qs]
    kth = sorted(
        {min(max(i, 0), n - 1) for lo, hi, lower, upper, _ in plans for i in (lo, hi, lower, upper)}
    )
    if x.ndim == 1:
        at = dict(zip(kth, select_ranks(x, kth), strict=True))
    else:
        part = np.partition(x, kth, axis=-1)
        at = {k: part[..., k] for k in kth}
    est, se = [], []
    for lo, hi, lower, upper, frac in plans:
        est.append(at[lo] * (1 - frac) + at[hi] * frac)
        if lower < 0 or upper > n - 1:
            se.append(np.full(x.shape[:-1], np.nan))
        else:
            se.append((at[upper] - at[lower]) / (2 * z))
    return np.stack(est, axis=-1), np.stack(se, axis=-1)
