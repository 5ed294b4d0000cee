"""compare(method=...) reports its own interval: p-value, interval and decision agree."""

import numpy as np
import pytest
from scipy import stats

import kpt.abtest as ab
from kpt.abtest._test_inversion import hodges_lehmann


def _agree(c) -> bool:
    excludes_zero = c.ci[0] > 0 or c.ci[1] < 0
    return excludes_zero == (c.p_value < c.alpha)


def test_mann_whitney_reports_hodges_lehmann_not_welch():
    # Heavy tails: Welch and Mann-Whitney often disagree; a Welch CI beside a rank test's p
    # then says "significant" and "not significant" in one sentence.
    rng = np.random.default_rng(3)
    disagreements = 0
    for _ in range(300):
        a = rng.standard_t(1.5, 40)
        b = rng.standard_t(1.5, 40) + rng.choice([0.0, 0.4])
        c = ab.compare(a, b, method="mann_whitney")
        assert c.interval.startswith("Moses") and "Hodges-Lehmann" in c.effect_name
        assert "Moses" in c.summary() and "Welch" not in c.summary()
        disagreements += not _agree(c)
    assert disagreements <= 3  # only p exactly at the boundary or ties may differ


def test_hodges_lehmann_matches_brute_force_and_scipy_inversion():
    rng = np.random.default_rng(5)
    a, b = rng.lognormal(0, 1, 37), rng.lognormal(0.3, 1, 45)
    shift, (low, high) = hodges_lehmann(a, b, 0.05)
    diffs = np.subtract.outer(b, a).reshape(-1)
    assert shift == pytest.approx(np.median(diffs))
    assert low in diffs and high in diffs

    def p(d):
        return stats.mannwhitneyu(b - d, a, method="asymptotic").pvalue

    eps = 1e-9
    assert p(low + eps) > 0.05 >= p(low - eps) and p(high - eps) > 0.05 >= p(high + eps)


def test_hodges_lehmann_large_samples_select_without_materializing():
    rng = np.random.default_rng(8)
    a, b = rng.normal(0, 1, 1500), rng.normal(0.1, 1, 1500)  # 2.25M differences: bisection
    shift, (low, high) = hodges_lehmann(a, b, 0.05)
    diffs = np.sort(np.subtract.outer(b, a).reshape(-1))
    n = diffs.size
    assert shift == pytest.approx((diffs[n // 2 - 1] + diffs[n // 2]) / 2)
    assert low in diffs and high in diffs
    assert np.count_nonzero(diffs < low) < n / 2 and np.count_nonzero(diffs > high) < n / 2


@pytest.mark.parametrize("method", ["mann_whitney", "permutation"])
def test_method_interval_covers_the_true_shift(method):
    # A location shift of 0.5 on t(3) data: the interval must cover it ~95% of the time.
    rng = np.random.default_rng(12)
    reps, covered, agree = 300, 0, 0
    for _ in range(reps):
        a, b = rng.standard_t(3, 25), rng.standard_t(3, 25) + 0.5
        c = ab.compare(a, b, method=method, n_resamples=999, seed=int(rng.integers(1 << 30)))
        covered += c.ci[0] <= 0.5 <= c.ci[1]
        agree += _agree(c)
    # 300 reps: binomial sd of the coverage ~1.3 points; a Welch-style or wrong interval drifts
    assert 0.91 <= covered / reps <= 0.985
    assert agree >= reps - 3


def test_permutation_interval_is_its_own_and_paired_works():
    rng = np.random.default_rng(2)
    a = rng.exponential(1, 30)
    c = ab.compare(a, a + 0.8 + rng.normal(0, 0.3, 30), method="permutation", paired=True,
                   n_resamples=1999, seed=1)  # fmt: skip
    assert c.interval.startswith("permutation") and c.ci[0] > 0 and _agree(c)
    welch = ab.compare(a, a + 0.8)
    assert welch.interval == "Welch t" and "Welch t interval" in welch.summary()
    assert ab.compare(a, a * 1.1, method="bootstrap", n_resamples=500, seed=0).interval == (
        "bootstrap BCa"
    )
