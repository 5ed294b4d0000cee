"""Multiple-comparison corrections: Holm (family-wise error) and Benjamini-Hochberg (FDR).

Benjamini-Hochberg (and Benjamini-Yekutieli under arbitrary dependence) is scipy's
``stats.false_discovery_control``. scipy has no Holm, so Holm is the step-down below (what
statsmodels' ``multipletests(method="holm")`` computes; tests check the two agree), which keeps
kpt-abtest free of a statsmodels dependency.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _p_values(p_values) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise ValueError("no p-values given")
    if not (np.isfinite(p) & (p >= 0) & (p <= 1)).all():
        raise ValueError(f"p-values must lie in [0, 1]; got {p[~((p >= 0) & (p <= 1))][:3]}")
    return p


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values; reject where adjusted <= alpha (controls FWER)."""
    p = _p_values(p_values)
    m = p.size
    order = np.argsort(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def benjamini_hochberg(p_values, *, dependent: bool = False) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); reject where <= alpha (controls FDR).

    dependent=True: Benjamini-Yekutieli, which controls the FDR under any dependence between
    the tests (at the price of power); plain BH assumes independence or positive dependence.
    """
    p = _p_values(p_values)
    return np.asarray(stats.false_discovery_control(p, method="by" if dependent else "bh"))
