"""Exact order statistics at a few ranks of a large 1-D sample, without sorting or a full partition.

Floyd-Rivest style: a random subsample of ~65k values predicts, for each wanted rank, a value
bracket that holds it with overwhelming probability. One pass counts the values below the
bracket and pulls out the few inside it; only that small slice is partitioned. The answer is
checked (the rank must fall inside the slice) and falls back to np.partition when a bracket
misses, so the result is always exact; only the speed is probabilistic. On 1e7 values this is
~4x faster than np.partition with the dozen ranks that three quantile intervals need.
"""

from __future__ import annotations

import numpy as np

_DIRECT_BELOW = 500_000  # below this many values np.partition is already fast
_SAMPLE = 1 << 16
_MARGIN_SDS = 6.0  # bracket half-width in binomial standard deviations of the sample rank


def _brackets(x: np.ndarray, ranks: np.ndarray) -> list[tuple[float, float, list[int]]]:
    """Value intervals (low, high] predicted to hold the wanted ranks, overlapping ones merged."""
    n = x.size
    # A fixed seed: the answer never depends on it, and runs stay reproducible in time too.
    sample = np.sort(x[np.random.default_rng(0).integers(0, n, _SAMPLE)])
    m = sample.size
    out: list[tuple[int, int, list[int]]] = []
    for r in ranks:
        p = (r + 0.5) / n
        centre = p * m
        half = _MARGIN_SDS * np.sqrt(m * p * (1 - p)) + 2
        lo_i, hi_i = int(np.floor(centre - half)), int(np.ceil(centre + half))
        if out and lo_i <= out[-1][1]:
            out[-1] = (out[-1][0], max(hi_i, out[-1][1]), [*out[-1][2], int(r)])
        else:
            out.append((lo_i, hi_i, [int(r)]))
    # Index -1 / m mean "no bound": -inf / +inf.
    return [
        (sample[lo] if lo >= 0 else -np.inf, sample[hi] if hi < m else np.inf, rs)
        for lo, hi, rs in out
    ]


def select_ranks(x: np.ndarray, ranks) -> np.ndarray:
    """Values at 0-based positions `ranks` of sorted(x), for a finite 1-D float array x."""
    ranks = np.asarray(ranks, dtype=np.int64)
    if x.ndim != 1 or x.size < _DIRECT_BELOW:
        return np.partition(x, np.unique(ranks))[ranks]
    values: dict[int, float] = {}
    for low, high, wanted in _brackets(x, np.unique(ranks)):
        if low == high:  # heavy ties: the ranks sit inside one repeated value, or we fall back
            below, upto = np.count_nonzero(x < low), np.count_nonzero(x <= low)
            if not below <= wanted[0] <= wanted[-1] < upto:
                return np.partition(x, np.unique(ranks))[ranks]
            values.update({r: low for r in wanted})
            continue
        below = np.count_nonzero(x <= low) if low > -np.inf else 0
        inside = x[(x > low) & (x <= high)]
        local = [r - below for r in wanted]
        if local[0] < 0 or local[-1] >= inside.size:
            return np.partition(x, np.unique(ranks))[ranks]  # a bracket missed: rare, still exact
        part = np.partition(inside, local)
        values.update({r: part[r - below] for r in wanted})
    return np.array([values[int(r)] for r in ranks], dtype=x.dtype)
