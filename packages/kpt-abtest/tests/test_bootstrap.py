"""The bootstrap's shortcuts must match brute-force resampling, and agree with scipy."""

import numpy as np
import pytest
from scipy import stats

import kpt.abtest as ab
from kpt.abtest._resample import jackknife, quantile_statistic, replicates


def _brute_replicates(x, statistic, n_resamples, rng):
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    return statistic(x[idx], axis=-1)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.37])
def test_order_statistic_draws_match_resampling(q):
    rng = np.random.default_rng(40)
    x = rng.lognormal(size=41)
    fast = replicates(x, quantile_statistic(q), 20_000, np.random.default_rng(1))
    brute = _brute_replicates(x, quantile_statistic(q), 20_000, np.random.default_rng(2))
    # Same distribution: a two-sample KS test at 20,000 draws each would flag any off-by-one
    # in the ranks (that shifts the distribution by a whole order statistic).
    assert stats.ks_2samp(fast, brute).pvalue > 1e-3
    assert fast.mean() == pytest.approx(brute.mean(), abs=5 * np.sqrt(2 / 20_000) * brute.std())


@pytest.mark.parametrize("statistic", [np.mean, np.median, quantile_statistic(0.9)])
def test_jackknife_shortcuts_are_exact(statistic):
    x = np.random.default_rng(41).normal(size=57)
    fast = np.sort(jackknife(x, statistic, np.random.default_rng(0)))
    brute = np.sort([statistic(np.delete(x, i), axis=-1) for i in range(x.size)])
    assert np.allclose(fast, brute, rtol=1e-12, atol=1e-12)


def test_named_statistics_and_scipy_agreement():
    rng = np.random.default_rng(42)
    a, b = rng.lognormal(size=400), rng.lognormal(0.3, size=400)
    ours = ab.bootstrap(a, b, statistic="mean", n_resamples=4000, seed=3)
    ref = stats.bootstrap((b, a), lambda u, v, axis: u.mean(axis) - v.mean(axis),
                          n_resamples=4000, method="BCa", random_state=3)  # fmt: skip
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert ours.ci[0] == pytest.approx(ref.confidence_interval.low, abs=0.1 * width)
    assert ours.ci[1] == pytest.approx(ref.confidence_interval.high, abs=0.1 * width)
    p90 = ab.bootstrap(a, b, statistic="p90", n_resamples=4000, seed=3)
    assert p90.estimate == pytest.approx(np.quantile(b, 0.9) - np.quantile(a, 0.9))
    assert p90.ci[0] < p90.estimate < p90.ci[1]
    with pytest.raises(ValueError, match="statistic='average'"):
        ab.bootstrap(a, statistic="average")


def test_paired_mean_bca_uses_pairs():
    rng = np.random.default_rng(43)
    a = rng.normal(size=300)
    b = a + 0.1 + rng.normal(scale=0.05, size=300)  # tiny noise around a shift: pairs matter
    paired = ab.bootstrap(a, b, paired=True, n_resamples=2000, seed=1)
    unpaired = ab.bootstrap(a, b, n_resamples=2000, seed=1)
    assert paired.ci[0] < 0.1 < paired.ci[1]
    assert paired.ci[1] - paired.ci[0] < 0.2 * (unpaired.ci[1] - unpaired.ci[0])
