"""Input checks shared by every test: each error names the bad value and the fix."""

from __future__ import annotations

import numpy as np


def check_alpha(alpha: float, name: str = "alpha") -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"{name}={alpha!r} must lie strictly between 0 and 1, e.g. 0.05")
    return alpha


def as_sample(x, name: str, *, min_size: int = 2) -> np.ndarray:
    """A 1-D float64 array with at least `min_size` finite values, or a clear ValueError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 0 else arr
        if arr.ndim != 1:
            raise ValueError(f"sample {name} must be 1-D, got shape {arr.shape}; flatten it first")
    if arr.size < min_size:
        raise ValueError(f"sample {name} has {arr.size} value(s); at least {min_size} are needed")
    # A finite sum proves every value finite (NaN and inf propagate); only then skip the scan.
    with np.errstate(all="ignore"):
        total = arr.sum()
    if not np.isfinite(total) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"sample {name} holds {bad} NaN/inf value(s); drop or impute them before testing"
        )
    return arr


def check_paired(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"paired=True needs samples of equal length, got {a.size} and {b.size}; "
            "pass paired=False for independent groups"
        )


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def parse_quantile(metric) -> float | None:
    """The quantile level a metric names ("median", "p95", 0.9), or None for other metrics."""
    if isinstance(metric, bool):
        raise ValueError(f"metric={metric!r} is not a metric name")
    if isinstance(metric, int | float | np.floating):
        q = float(metric)
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile metric {q!r} must lie strictly between 0 and 1")
        return q
    if metric == "median":
        return 0.5
    if isinstance(metric, str) and metric.startswith("p") and metric[1:].replace(".", "").isdigit():
        q = float(metric[1:]) / 100.0
        if not 0.0 < q < 1.0:
            raise ValueError(f"metric {metric!r} names a percentile outside (0, 100)")
        return q
    return None
