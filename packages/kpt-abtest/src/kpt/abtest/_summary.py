"""Mergeable streaming summaries: exact count/mean/variance (Chan) plus a KLL quantile sketch.

Workers each keep a Summary, send `to_dict()` over kpt-wire (msgpack-able: ints, floats,
bytes), and a coordinator merges them; merging is associative, so the order does not matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from kpt.abtest._sketch import QuantileSketch

FORMAT_VERSION = 1
# Counts above 2**53 are not exact in float64, which the vectorized merge computes in; no real
# evaluation comes near it, so a payload claiming more is refused as corrupt or hostile.
MAX_COUNT = 1 << 53


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

    @property
    def quantile_rank_error(self) -> float:
        """Rank error of quantile() at 99% confidence (0 while the sketch holds every value)."""
        return self.sketch.rank_error

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
        """Decode a `to_dict()` payload; ValueError, naming the field, for anything no real
        summary could hold (NaN, n over 2**53, negative or impossible m2, min > max, ...)."""
        n, mean, m2, low, high = _checked_moments(data)
        summary = cls(seed=seed)
        summary.n, summary.mean, summary.m2 = n, float(mean), float(m2)
        if n:
            summary.min, summary.max = float(low), float(high)
        summary.sketch = QuantileSketch.from_dict(data["sketch"], seed=seed)
        if summary.sketch.n != summary.n:
            raise ValueError(f"summary says n={summary.n} but its sketch holds {summary.sketch.n}")
        _check_items_in_range(summary.sketch, summary.min, summary.max)
        return summary

    @classmethod
    def from_dicts(cls, dicts: Iterable[dict], *, seed=None) -> Summary:
        """Decode and merge many workers' `to_dict()` payloads in one vectorized step.

        Equivalent to merging `from_dict` of each, but the moments combine as arrays and the
        sketches as one bytes join per level, so 1,000 payloads take a few milliseconds.
        """
        dicts = list(dicts)
        summary = cls(seed=seed)
        if not dicts:
            return summary
        moments = [_checked_moments(d, i) for i, d in enumerate(dicts)]
        dicts = [d for d, m in zip(dicts, moments, strict=True) if m[0]]  # skip empty ones
        moments = [m for m in moments if m[0]]
        if not dicts:
            return summary
        ns, means, m2s, mins, maxs = (np.array(column) for column in zip(*moments, strict=True))
        if int(ns.sum()) > MAX_COUNT:
            raise ValueError(
                f"these summaries hold {int(ns.sum())} values together, over {MAX_COUNT} (2**53, "
                "where float64 counts stop being exact); merge fewer at once"
            )
        summary._combine(ns, means.astype(np.float64), m2s.astype(np.float64))
        summary.min, summary.max = float(mins.min()), float(maxs.max())
        summary.sketch = QuantileSketch.from_dicts([d["sketch"] for d in dicts], seed=seed)
        _check_items_in_range(summary.sketch, summary.min, summary.max)
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
    if version.__class__ is not int:
        raise ValueError(f"summary format version {version!r:.40} must be an int")
    if version > FORMAT_VERSION:
        raise ValueError(f"summary format version {version} is newer than this kpt-abtest "
                         f"understands ({FORMAT_VERSION}); upgrade kpt-abtest")  # fmt: skip
    return data


def _number(data: dict, key: str, index: int) -> float:
    value = data.get(key)
    if value.__class__ is not float and value.__class__ is not int:
        raise ValueError(
            f"summary {index}: {key!r} is {value!r:.40}; it must be a number "
            "(send Summary.to_dict())"
        )
    return value


def _checked_moments(data: dict, index: int = 0) -> tuple[int, float, float, float, float]:
    """n, mean, m2, min, max of one payload, after checking that a real summary could hold
    them: one that cannot would corrupt every merge after it. Plain Python, not numpy: a few
    hundred ns per payload, where numpy's per-call overhead cost tens of microseconds."""
    _check_version(data)
    n = data.get("n")
    if n.__class__ is not int or not 0 <= n <= MAX_COUNT:
        raise ValueError(
            f"summary {index}: n={n!r:.40} must be an int in [0, 2**53]; a larger count is no "
            "real evaluation (and is not exact in float64)"
        )
    mean, m2 = _number(data, "mean", index), _number(data, "m2", index)
    if n == 0:
        low, high = math.inf, -math.inf
    else:
        low, high = _number(data, "min", index), _number(data, "max", index)
    if not math.isfinite(mean):
        _refuse(data, index, "mean is not finite")
    if not math.isfinite(m2):
        _refuse(data, index, "m2 is not finite")
    if m2 < 0:
        _refuse(data, index, "m2 (the sum of squared deviations) is negative")
    if n == 0:
        if m2 != 0:
            _refuse(data, index, "an empty summary (n=0) has m2 != 0")
        return n, mean, m2, low, high
    if not (math.isfinite(low) and math.isfinite(high)):
        _refuse(data, index, "min or max is not finite")
    if low > high:
        _refuse(data, index, "min is above max")
    # What rounding in a real summary can leave: relative 1e-9 of the values' magnitude.
    scale = max(abs(low), abs(high))
    slack = 1e-9 * scale + 1e-300
    if not low - slack <= mean <= high + slack:
        _refuse(data, index, "mean lies outside [min, max]")
    # Popoviciu: a variance never exceeds (range / 2)**2, so m2 <= n * range**2 / 4.
    if m2 > n * ((high - low) ** 2 / 4 * (1 + 1e-6) + (1e-7 * scale) ** 2):
        _refuse(data, index, "m2 exceeds n * (max - min)**2 / 4")
    return n, mean, m2, low, high


def _refuse(data: dict, index: int, what: str) -> None:
    shown = {key: data.get(key) for key in ("n", "mean", "m2", "min", "max")}
    raise ValueError(
        f"summary {index} is corrupt: {what} ({shown}); send Summary.to_dict() of real values"
    )


def _check_items_in_range(sketch: QuantileSketch, low: float, high: float) -> None:
    for h, items in enumerate(sketch.levels):
        # NaN fails both comparisons and inf the bounds: no separate isfinite pass needed.
        if items.size and not (low <= items.min() and items.max() <= high):
            raise ValueError(
                f"sketch level {h} holds values outside the summary's [min, max] = [{low}, {high}] "
                "(or NaN/inf); the payload is corrupt"
            )
