"""Change points in a benchmark history: PELT (Killick et al. 2012) on shifts in the mean,
or E-Divisive means (_edivisive.py, as in Apache Otava) on any change in distribution.

PELT: noise is estimated robustly from first differences (MAD), so one outlier run or one
real shift does not inflate it. The penalty per change is in units of that noise variance;
the default 3 log(n) keeps false alarms rare on pure noise (tests/test_changepoint.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kpt.abtest._edivisive import edivisive_splits
from kpt.abtest._validate import check_alpha, check_positive_int


@dataclass(frozen=True)
class ChangePoint:
    index: int  # first point of the new segment
    mean_before: float
    mean_after: float
    p_value: float | None = None  # E-Divisive's permutation p-value; None for PELT

    @property
    def relative_change(self) -> float:
        return self.mean_after / self.mean_before - 1 if self.mean_before else float("nan")


def _noise_sd(x: np.ndarray) -> float:
    diffs = np.diff(x)
    mad = np.median(np.abs(diffs - np.median(diffs)))
    sd = 1.4826 * mad / np.sqrt(2)
    return float(sd) if sd > 0 else float(np.std(x) or 1.0)


def detect_changes(
    history,
    *,
    method: str = "pelt",
    penalty: float | None = None,
    min_size: int = 3,
    alpha: float = 0.05,
    permutations: int = 199,
    seed=0,
) -> list[ChangePoint]:
    """Where a series of benchmark results changes; empty list when it never does.

    method="pelt": optimal segmentation of mean shifts with `penalty` per change.
    method="edivisive": E-Divisive means, splits kept while a permutation test (`permutations`
    shuffles, seeded by `seed` so reruns agree) gives p <= alpha; sees changes in spread or
    shape too, O(n^2) memory (fine for histories of a few thousand runs).
    """
    x = np.asarray(history, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError("history holds NaN/inf; drop failed runs before detecting changes")
    n = x.size
    if min_size < 1:
        raise ValueError(f"min_size={min_size!r} must be >= 1")
    if method not in ("pelt", "edivisive"):
        raise ValueError(f"method={method!r}: choose 'pelt' or 'edivisive'")
    if n < 2 * min_size:
        return []
    if method == "edivisive":
        splits = edivisive_splits(
            x, min_size=min_size, alpha=check_alpha(alpha),
            permutations=check_positive_int(permutations, "permutations", minimum=19),
            exponent=1.0, rng=np.random.default_rng(seed),
        )  # fmt: skip
        return _segments(x, [0, *sorted(i for i, _ in splits), n], dict(splits))
    z = x / _noise_sd(x)
    beta = 3 * np.log(n) if penalty is None else float(penalty)
    s1 = np.concatenate([[0.0], np.cumsum(z)])
    s2 = np.concatenate([[0.0], np.cumsum(z * z)])

    def cost(starts: np.ndarray, end: int) -> np.ndarray:
        length = end - starts
        total = s1[end] - s1[starts]
        return (s2[end] - s2[starts]) - total**2 / length

    best = np.full(n + 1, np.inf)  # best[t]: penalized cost of x[:t]
    best[0] = -beta
    last = np.zeros(n + 1, dtype=int)
    candidates = np.array([0])
    for end in range(min_size, n + 1):
        ready = end - candidates >= min_size
        starts = candidates[ready]
        totals = best[starts] + cost(starts, end) + beta
        i = int(np.argmin(totals))
        best[end], last[end] = totals[i], starts[i]
        # Pruning: a start already worse than the optimum by beta can never win later.
        keep = best[starts] + cost(starts, end) <= best[end]
        candidates = np.concatenate([candidates[~ready], starts[keep], [end - min_size + 1]])
    cuts, end = [], n
    while end > 0:
        cuts.append(int(last[end]))
        end = last[end]
    return _segments(x, sorted(set(cuts) | {n}), {})


def _segments(x: np.ndarray, bounds: list[int], p_values: dict) -> list[ChangePoint]:
    return [
        ChangePoint(start, float(x[left:start].mean()), float(x[start:right].mean()),
                    p_values.get(start))
        for left, start, right in zip(bounds[:-2], bounds[1:-1], bounds[2:], strict=True)
    ]  # fmt: skip
