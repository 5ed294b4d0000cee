"""Mergeable streaming summaries: exact count/mean/variance (Chan) plus a KLL quantile sketch.

Workers each keep a Summary, send `to_dict()` over kpt-wire (msgpack-able: ints, floats,
bytes), and a coordinator merges them; merging is associative, so the order does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from kpt.abtest._sketch import QuantileSketch

FORMAT_VERSION = 1


class Summary:
    """count, mean, variance, min, max exactly; quantiles within the sketch's rank error."""

    def __init__(self, k: int = 200, *, seed=None) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean
        self.min = np.inf
        self.max = -np.inf
        self.sketch = QuantileSketch(k, seed=seed)

    def update(self, values) -> Summary:
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return self
        if not np.isfinite(x).all():
            raise ValueError("Summary.update got NaN/inf; drop them before summarizing")
        mean = float(x.mean())
        self._combine(np.array([x.size]), np.array([mean]), np.array([((x - mean) ** 2).sum()]))
        self.min, self.max = min(self.min, float(x.min())), max(self.max, float(x.max()))
        self.sketch.update(x)
        return self

    def _combine(self, ns: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> None:
        # Chan et al.: pooled M2 = sum of M2s + sum n_i (mean_i - pooled mean)^2, all at once.
        ns = np.concatenate([[self.n], ns]).astype(np.float64)
        means = np.concatenate([[self.mean], means])
        m2s = np.concatenate([[self.m2], m2s])
        total = ns.sum()
        if total == 0:
            return
        mean = float((ns * means).sum() / total)
        self.m2 = float(m2s.sum() + (ns * (means - mean) ** 2).sum())
        self.mean, self.n = mean, int(total)

    def merge(self, other: Summary) -> Summary:
        return self.merge_all([other])

    def merge_all(self, others: Iterable[Summary]) -> Summary:
        """Fold in many summaries with one vectorized moment update and one sketch merge."""
        others = [o for o in others if o.n > 0]
        if not others:
            return self
        self._combine(
            np.array([o.n for o in others]),
            np.array([o.mean for o in others]),
            np.array([o.m2 for o in others]),
        )
        self.min = min(self.min, *(o.min for o in others))
        self.max = max(self.max, *(o.max for o in others))
        self.sketch.merge_all([o.sketch for o in others])
        return self

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); NaN below two values."""
        return self.m2 / (self.n - 1) if self.n > 1 else float("nan")

    @property
    def std(self) -> float:
        return float(np.sqrt(self.variance))

    def quantile(self, q):
        return self.sketch.quantile(q)

    def to_dict(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "n": self.n,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.min if self.n else None,
            "max": self.max if self.n else None,
            "sketch": self.sketch.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict, *, seed=None) -> Summary:
        version = data.get("version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(f"summary format version {version} is newer than this kpt-abtest "
                             f"understands ({FORMAT_VERSION}); upgrade kpt-abtest")  # fmt: skip
        summary = cls(seed=seed)
        summary.n, summary.mean, summary.m2 = int(data["n"]), float(data["mean"]), float(data["m2"])
        if summary.n:
            summary.min, summary.max = float(data["min"]), float(data["max"])
        summary.sketch = QuantileSketch.from_dict(data["sketch"], seed=seed)
        if summary.sketch.n != summary.n:
            raise ValueError(f"summary says n={summary.n} but its sketch holds {summary.sketch.n}")
        return summary

    def __repr__(self) -> str:
        return f"Summary(n={self.n}, mean={self.mean:.6g}, std={self.std:.6g})"
