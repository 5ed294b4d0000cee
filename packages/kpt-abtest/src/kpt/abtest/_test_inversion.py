"""Intervals that belong to a test: the set of shifts d the test would not reject for b - d vs a.

A rank test's p-value printed beside a Welch interval can disagree with it (p = 0.33 next to an
interval excluding 0). Inverting the test itself gives an interval that excludes 0 exactly when
the test rejects, so the p-value, the interval and the decision tell one story.

- Mann-Whitney -> the Hodges-Lehmann shift (median of all differences b_j - a_i) and its Moses
  interval: order statistics of those differences, chosen with the same normal approximation
  and continuity correction as scipy's asymptotic Mann-Whitney p-value.
- Permutation (difference of means) -> the shifts whose permutation p-value exceeds alpha,
  from the same permutations that give the reported p-value.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from kpt.abtest._validate import check_paired

# Up to this many pairwise differences are materialized; beyond, order statistics are found
# by bisection on the value with an O(n log n) count per step (memory stays O(n)).
_MATERIALIZE = 1 << 21
_BLOCK = 1 << 21  # permutation entries per chunk (16 MiB of int64 indices)


def _count_at_most(a_sorted: np.ndarray, b_sorted: np.ndarray, d: float) -> int:
    """How many differences b_j - a_i are <= d."""
    return int(np.searchsorted(b_sorted, a_sorted + d, side="right").sum())


def _kth_difference(a_sorted: np.ndarray, b_sorted: np.ndarray, k: int) -> float:
    """The k-th smallest (1-based) of all differences b_j - a_i, without forming them."""
    lo = float(b_sorted[0] - a_sorted[-1]) - 1.0  # count(lo) = 0 < k
    hi = float(b_sorted[-1] - a_sorted[0])  # count(hi) = n_a n_b >= k
    for _ in range(200):
        mid = lo + (hi - lo) / 2
        if not lo < mid < hi:
            break
        if _count_at_most(a_sorted, b_sorted, mid) >= k:
            hi = mid
        else:
            lo = mid
    # Snap to an actual difference: the largest one <= hi is the k-th smallest.
    idx = np.searchsorted(b_sorted, a_sorted + hi, side="right")
    ok = idx > 0
    return float((b_sorted[idx[ok] - 1] - a_sorted[ok]).max())


def _order_statistics(a: np.ndarray, b: np.ndarray, ranks: list[int]) -> list[float]:
    a_sorted, b_sorted = np.sort(a), np.sort(b)
    if a.size * b.size <= _MATERIALIZE:
        diffs = np.subtract.outer(b_sorted, a_sorted).reshape(-1)
        diffs = np.partition(diffs, [r - 1 for r in ranks])
        return [float(diffs[r - 1]) for r in ranks]
    return [_kth_difference(a_sorted, b_sorted, r) for r in ranks]


def hodges_lehmann(a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[float, tuple[float, float]]:
    """Hodges-Lehmann shift of b against a and its Moses (1 - alpha) interval.

    The interval is [D_(k), D_(N + 1 - k)] over the N = n_a n_b sorted differences, with
    k = floor(N/2 - z sigma - 1/2) + 1 and sigma^2 = n_a n_b (n_a + n_b + 1) / 12: exactly the
    shifts d for which scipy's asymptotic Mann-Whitney test of b - d against a (continuity
    corrected, no ties) has p > alpha. Valid for a location shift; for tiny samples (< ~10 per
    arm) the normal approximation is rough.
    """
    n = a.size * b.size
    z = float(stats.norm.ppf(1 - alpha / 2))
    sigma = float(np.sqrt(a.size * b.size * (a.size + b.size + 1) / 12.0))
    k = int(np.floor(n / 2 - z * sigma - 0.5)) + 1
    half = [(n + 1) // 2, n // 2 + 1]  # the two middle ranks (equal when n is odd)
    if k < 1:  # too few values for this confidence level: the interval is unbounded
        m1, m2 = _order_statistics(a, b, half)
        return (m1 + m2) / 2, (-np.inf, np.inf)
    m1, m2, low, high = _order_statistics(a, b, [*half, k, n + 1 - k])
    return (m1 + m2) / 2, (low, high)


def _permutation_null(a, b, n_resamples: int, paired: bool, rng):
    """Per permutation: the statistic at shift 0 (t0) and its slope in the shift d (c).

    Unpaired, shifting b by d moves a permutation's mean difference by -d * c with
    c = k / n_b - (n_b - k) / n_a, k = how many of b's values stayed on b's side. Paired, the
    sign-flipped mean of (b - a - d) moves by -d * mean(signs).
    """
    if paired:
        d = b - a
        t0 = np.empty(n_resamples)
        c = np.empty(n_resamples)
        rows = max(1, _BLOCK // d.size)
        for start in range(0, n_resamples, rows):
            count = min(rows, n_resamples - start)
            signs = rng.choice(np.array([-1.0, 1.0]), size=(count, d.size))
            t0[start : start + count] = (signs * d).mean(axis=1)
            c[start : start + count] = signs.mean(axis=1)
        return t0, c
    pooled = np.concatenate([a, b])
    n_a, n_b = a.size, b.size
    t0 = np.empty(n_resamples)
    c = np.empty(n_resamples)
    rows = max(1, _BLOCK // pooled.size)
    base = np.arange(pooled.size)
    for start in range(0, n_resamples, rows):
        count = min(rows, n_resamples - start)
        perms = rng.permuted(np.broadcast_to(base, (count, pooled.size)), axis=1)
        values = pooled[perms]
        t0[start : start + count] = values[:, n_a:].mean(axis=1) - values[:, :n_a].mean(axis=1)
        k = np.count_nonzero(perms[:, n_a:] >= n_a, axis=1)
        c[start : start + count] = k / n_b - (n_b - k) / n_a
    return t0, c


def permutation_shift(
    a: np.ndarray, b: np.ndarray, *, alpha: float, n_resamples: int, paired: bool, seed
) -> tuple[float, tuple[float, float]]:
    """Permutation p-value for mean(b) - mean(a) and the interval of shifts it does not reject."""
    if paired:
        check_paired(a, b)
    rng = np.random.default_rng(seed)
    t0, c = _permutation_null(a, b, n_resamples, paired, rng)
    observed = float((b - a).mean()) if paired else float(b.mean() - a.mean())

    def p_value(shift: float) -> float:
        stat = abs(observed - shift)
        # Tolerance so that ties from float rounding count as "at least as extreme".
        hits = np.count_nonzero(np.abs(t0 - shift * c) >= stat * (1 - 1e-12))
        return float((1 + hits) / (1 + n_resamples))

    spread = float(np.std(t0)) or abs(observed) or 1.0

    def boundary(direction: float) -> float:
        inside, step = observed, spread
        outside = observed + direction * step
        for _ in range(60):  # widen until the test rejects (p <= alpha) out there
            if p_value(outside) <= alpha:
                break
            inside, step = outside, 2 * step
            outside = observed + direction * step
        else:
            return direction * np.inf
        for _ in range(60):
            mid = (inside + outside) / 2
            if p_value(mid) > alpha:
                inside = mid
            else:
                outside = mid
        return inside

    return p_value(0.0), (boundary(-1.0), boundary(1.0))
