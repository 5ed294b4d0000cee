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
        _check_version(data)
        summary = cls(seed=seed)
        summary.n, summary.mean, summary.m2 = int(data["n"]), float(data["mean"]), float(data["m2"])
        if summary.n:
            summary.min, summary.max = float(data["min"]), float(data["max"])
        summary.sketch = QuantileSketch.from_dict(data["sketch"], seed=seed)
        if summary.sketch.n != summary.n:
            raise ValueError(f"summary says n={summary.n} but its sketch holds {summary.sketch.n}")
        return summary

    @classmethod
    def from_dicts(cls, dicts: Iterable[dict], *, seed=None) -> Summary:
        """Decode and merge many workers' `to_dict()` payloads in one vectorized step.

        Equivalent to merging `from_dict` of each, but the moments combine as arrays and the
        sketches as one bytes join per level, so 1,000 payloads take a few milliseconds.
        """
        dicts = [d for d in dicts if _check_version(d)["n"]]
        summary = cls(seed=seed)
        if not dicts:
            return summary
        ns = np.fromiter((int(d["n"]) for d in dicts), dtype=np.int64, count=len(dicts))
        summary._combine(
            ns,
            np.fromiter((d["mean"] for d in dicts), dtype=np.float64, count=len(dicts)),
            np.fromiter((d["m2"] for d in dicts), dtype=np.float64, count=len(dicts)),
        )
        summary.min = float(min(d["min"] for d in dicts))
        summary.max = float(max(d["max"] for d in dicts))
        summary.sketch = QuantileSketch.from_dicts([d["sketch"] for d in dicts], seed=seed)
        sketch_ns = [int(d["sketch"]["n"]) for d in dicts]
        if sketch_ns != ns.tolist():
            bad = next(i for i, (a, b) in enumerate(zip(ns, sketch_ns, strict=True)) if a != b)
            raise ValueError(
                f"summary {bad} says n={ns[bad]} but its sketch holds {sketch_ns[bad]}"
            )
        return summary

    def __repr__(self) -> str:
        return f"Summary(n={self.n}, mean={self.mean:.6g}, std={self.std:.6g})"


def _check_version(data: dict) -> dict:
    version = data.get("version", FORMAT_VERSION) if isinstance(data, dict) else None
    if version is None:
        raise ValueError(
            f"a summary payload must be a dict from Summary.to_dict(), got {data!r:.60}"
        )
    if version > FORMAT_VERSION:
        raise ValueError(f"summary format version {version} is newer than this kpt-abtest "
                         f"understands ({FORMAT_VERSION}); upgrade kpt-abtest")  # fmt: skip
    return data
