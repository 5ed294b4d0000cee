"""CUPED: subtract the part of the metric that pre-experiment covariates already predict."""

from __future__ import annotations

import numpy as np


def _covariate_matrix(x, n: int, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(
            f"covariates for arm {name} must have one row per unit ({n}), got shape "
            f"{np.shape(x)}; pass an (n,) or (n, k) array"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"covariates for arm {name} hold NaN/inf; impute them first")
    return arr


def cuped(a, b, covariates_a, covariates_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjusted samples and the coefficients theta, from one pooled least-squares fit.

    Pooling both arms keeps theta independent of the treatment, so the difference of adjusted
    means stays unbiased; with k covariates theta solves the k x k normal equations.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    xa = _covariate_matrix(covariates_a, a.size, "a")
    xb = _covariate_matrix(covariates_b, b.size, "b")
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"arms have {xa.shape[1]} and {xb.shape[1]} covariates; they must match")
    # Center each arm on its own mean so the treatment effect does not leak into theta.
    y = np.concatenate([a - a.mean(), b - b.mean()])
    x = np.concatenate([xa - xa.mean(axis=0), xb - xb.mean(axis=0)])
    theta, *_ = np.linalg.lstsq(x, y, rcond=None)
    pooled_mean = np.concatenate([xa, xb]).mean(axis=0)
    return a - (xa - pooled_mean) @ theta, b - (xb - pooled_mean) @ theta, theta
