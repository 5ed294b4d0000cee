"""Exact order statistics at a few ranks of a large 1-D sample, without sorting or a full partition.

Floyd-Rivest style: a random subsample of ~65k values predicts, for each wanted rank, a value
bracket that holds it with overwhelming probability. One chunked pass counts the values below
each bracket and pulls out the few inside it; only those small slices are partitioned. The answer is
checked (the rank must fall inside the slice) and falls back to np.partition when a bracket
misses, so the result is always exact; only the speed is probabilistic. On 1e7 values this is
~5x faster than np.partition with the dozen ranks that three quantile intervals need.
"""

from __future__ import annotations

import numpy as np

_DIRECT_BELOW = 500_000  # below this many values np.partition is already fast
_SAMPLE = 1 << 16
_MARGIN_SDS = 6.0  # bracket half-width in binomial standard deviations of the sample rank
_CHUNK = 1 << 17  # values per scan step: 1 MiB, so the masks stay in cache


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


def _scan(x: np.ndarray, brackets) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """One pass in cache-sized chunks: per bracket, #values <= low, #values == low, and the
    values inside (low, high]. Chunking keeps the masks in cache: ~3x faster than whole-array
    comparisons on 1e7 values."""
    below = np.zeros(len(brackets), dtype=np.int64)
    equal = np.zeros(len(brackets), dtype=np.int64)
    inside: list[list[np.ndarray]] = [[] for _ in brackets]
    for start in range(0, x.size, _CHUNK):
        chunk = x[start : start + _CHUNK]
        for i, (low, high, _) in enumerate(brackets):
            at_or_below = chunk <= low
            below[i] += np.count_nonzero(at_or_below)
            if low == high:
                equal[i] += np.count_nonzero(chunk == low)
                continue
            keep = chunk <= high
            keep &= ~at_or_below
            inside[i].append(chunk[keep])
    return below, equal, [np.concatenate(parts) if parts else np.empty(0) for parts in inside]


def select_ranks(x: np.ndarray, ranks) -> np.ndarray:
    """Values at 0-based positions `ranks` of sorted(x), for a finite 1-D float array x."""
    ranks = np.asarray(ranks, dtype=np.int64)
    if x.ndim != 1 or x.size < _DIRECT_BELOW:
        return np.partition(x, np.unique(ranks))[ranks]
    brackets = _brackets(x, np.unique(ranks))
    below, equal, inside = _scan(x, brackets)
    values: dict[int, float] = {}
    for (low, high, wanted), n_below, n_equal, values_in in zip(
        brackets, below, equal, inside, strict=True
    ):
        if low == high:  # heavy ties: the ranks sit inside one repeated value, or we fall back
            if not n_below - n_equal <= wanted[0] <= wanted[-1] < n_below:
                return np.partition(x, np.unique(ranks))[ranks]
            values.update({r: low for r in wanted})
            continue
        local = [r - n_below for r in wanted]
        if local[0] < 0 or local[-1] >= values_in.size:
            return np.partition(x, np.unique(ranks))[ranks]  # a bracket missed: rare, still exact
        part = np.partition(values_in, local)
        values.update({r: part[r - n_below] for r in wanted})
    return np.array([values[int(r)] for r in ranks], dtype=x.dtype)
