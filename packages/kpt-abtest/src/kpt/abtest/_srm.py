"""Sample-ratio mismatch: did the arms receive the traffic split the design promised?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class SRMResult:
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    p_value: float
    mismatch: bool  # True: the assignment is suspect, do not trust the comparison

    def summary(self) -> str:
        verdict = "MISMATCH: check assignment and logging" if self.mismatch else "ok"
        return (
            f"sample ratio {self.observed} vs expected {self.expected}: "
            f"p = {self.p_value:.3g}, {verdict}"
        )


def srm_check(counts, ratios=None, *, alpha: float = 0.001) -> SRMResult:
    """Chi-square goodness of fit of arm counts to the planned ratios (equal by default).

    The customary alpha is 0.001: an SRM flag is a bug report, so false alarms are costly.
    """
    observed = np.asarray(counts, dtype=np.float64).reshape(-1)
    if observed.size < 2 or (observed < 0).any() or observed.sum() == 0:
        raise ValueError(f"counts={counts!r} must be two or more non-negative counts, not all 0")
    weights = np.ones(observed.size) if ratios is None else np.asarray(ratios, dtype=np.float64)
    if weights.shape != observed.shape or (weights <= 0).any():
        raise ValueError(f"ratios={ratios!r} must be one positive weight per arm ({observed.size})")
    expected = observed.sum() * weights / weights.sum()
    p = float(stats.chisquare(observed, expected).pvalue)
    return SRMResult(
        tuple(int(c) for c in observed), tuple(float(e) for e in expected), p, p < alpha
    )
