"""Holm and BH/BY agree with statsmodels and scipy, and Holm holds the family-wise error."""

import numpy as np
import pytest
from scipy import stats

import kpt.abtest as ab


def _cases():
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 30, 200):
        yield rng.uniform(size=m)
        yield np.r_[rng.uniform(0, 0.01, m), rng.uniform(size=m)]  # strong signals + nulls
    yield np.array([0.01, 0.01, 0.04, 0.04, 0.5, 1.0, 0.0])  # ties and the ends


@pytest.mark.parametrize("p", list(_cases()))
def test_agrees_with_statsmodels_and_scipy(p):
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    assert ab.holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-12)
    assert ab.benjamini_hochberg(p) == pytest.approx(multipletests(p, method="fdr_bh")[1])
    assert ab.benjamini_hochberg(p, dependent=True) == pytest.approx(
        stats.false_discovery_control(p, method="by")
    )


def test_holm_holds_family_wise_error_and_bh_the_fdr():
    # 4000 families of 10 tests; 3 true effects. Holm: P(any false rejection) <= 0.05;
    # BH: mean false-discovery proportion <= 0.05 (binomial sd ~0.35 points at 4000).
    rng = np.random.default_rng(1)
    families, m, alpha = 4000, 10, 0.05
    z = rng.standard_normal((families, m))
    z[:, :3] += 3.0
    p = 2 * stats.norm.sf(np.abs(z))
    holm_false = bh_fdp = 0.0
    for row in p:
        holm_false += (ab.holm(row)[3:] <= alpha).any()
        rejected = ab.benjamini_hochberg(row) <= alpha
        bh_fdp += rejected[3:].sum() / max(1, rejected.sum())
    assert holm_false / families <= alpha + 0.01
    assert bh_fdp / families <= alpha + 0.01


def test_bad_p_values_are_named():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        ab.benjamini_hochberg([0.1, 1.5])
    with pytest.raises(ValueError, match="no p-values"):
        ab.holm([])
