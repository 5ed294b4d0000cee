"""E-Divisive means (Matteson & James 2014), the change-point method Apache Otava uses.

Segments are split one at a time where the energy distance between the part before and the
part after is largest; a split is kept only if a permutation test (values shuffled within the
segment) calls it significant, and the search stops at the first split that is not. Energy
distance sees any change in distribution (mean, spread, shape), not only mean shifts, and
needs no noise model. All splits of a segment are scored at once from 2-D prefix sums of the
pairwise distance matrix, so one scan is O(m^2) for a segment of m points.
"""

from __future__ import annotations

import itertools

import numpy as np


def _split_scores(x: np.ndarray, min_size: int, exponent: float) -> np.ndarray:
    """Q(tau) for every split tau of x (NaN where a side is shorter than min_size)."""
    m = x.size
    dist = np.abs(x[:, None] - x[None, :]) ** exponent
    prefix = np.zeros((m + 1, m + 1))
    prefix[1:, 1:] = dist.cumsum(0).cumsum(1)
    tau = np.arange(m + 1)
    left = prefix[tau, tau]  # sum over the left block (each pair twice)
    right = prefix[m, m] - 2 * prefix[tau, m] + prefix[tau, tau]
    between = prefix[tau, m] - prefix[tau, tau]
    n_l, n_r = tau.astype(float), (m - tau).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        energy = 2 * between / (n_l * n_r) - left / (n_l * (n_l - 1)) - right / (n_r * (n_r - 1))
        scores = n_l * n_r / m * energy
    scores[: max(min_size, 2)] = np.nan
    scores[m - max(min_size, 2) + 1 :] = np.nan
    return scores


def _best_split(x: np.ndarray, min_size: int, exponent: float) -> tuple[int, float]:
    scores = _split_scores(x, min_size, exponent)
    if np.isnan(scores).all():
        return -1, -np.inf
    tau = int(np.nanargmax(scores))
    return tau, float(scores[tau])


def edivisive_splits(
    x: np.ndarray,
    *,
    min_size: int,
    alpha: float,
    permutations: int,
    exponent: float,
    rng,
) -> list[tuple[int, float]]:
    """Change indices with their permutation p-values, in the order they were found."""
    bounds = [0, x.size]
    found: list[tuple[int, float]] = []
    while True:
        best = None  # (score, start, end, tau) of the strongest split over all segments
        for start, end in itertools.pairwise(bounds):
            tau, score = _best_split(x[start:end], min_size, exponent)
            if tau > 0 and (best is None or score > best[0]):
                best = (score, start, end, tau)
        if best is None:
            return found
        score, start, end, tau = best
        segment = x[start:end]
        beaten = sum(
            _best_split(rng.permutation(segment), min_size, exponent)[1] >= score
            for _ in range(permutations)
        )
        p_value = (1 + beaten) / (1 + permutations)
        if p_value > alpha:
            return found
        found.append((start + tau, p_value))
        bounds = sorted([*bounds, start + tau])
