"""compare() and the smaller tools: directions, methods, agreement with scipy, bad input."""

import numpy as np
import pytest
from scipy import stats

import kpt.abtest as ab


@pytest.fixture
def rng():
    return np.random.default_rng(41)


def test_fields_direction_and_summary(rng):
    a, b = rng.normal(10, 1, 500), rng.normal(9, 1, 500)
    c = ab.compare(a, b)
    assert c.effect == pytest.approx(b.mean() - a.mean())
    assert c.relative_effect == pytest.approx(b.mean() / a.mean() - 1)
    assert c.ci[0] < c.effect < c.ci[1] and c.relative_ci[0] < c.relative_effect < c.relative_ci[1]
    assert c.decision == "b_better"  # lower latency wins by default
    assert ab.compare(a, b, higher_is_better=True).decision == "a_better"
    assert "b is significantly better" in c.summary()
    assert (c.n_a, c.n_b, c.alpha) == (500, 500, 0.05)


def test_agrees_with_scipy(rng):
    a, b = rng.lognormal(size=80), rng.lognormal(0.3, size=120)
    assert ab.compare(a, b).p_value == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert ab.compare(a, b[:80], paired=True).p_value == pytest.approx(
        stats.ttest_rel(b[:80], a).pvalue
    )
    assert ab.mann_whitney(a, b)[1] == pytest.approx(stats.mannwhitneyu(b, a).pvalue)
    ours = ab.bootstrap(a, b, n_resamples=4000, seed=1)
    ref = stats.bootstrap((b, a), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                          n_resamples=4000, method="BCa", random_state=1)  # fmt: skip
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(ours.ci[0] - ref.confidence_interval.low) < 0.1 * width
    assert abs(ours.ci[1] - ref.confidence_interval.high) < 0.1 * width


@pytest.mark.parametrize(
    "metric,method",
    [("mean", "permutation"), ("mean", "bootstrap"), ("median", "bootstrap_percentile"),
     ("p95", "order_statistic"), (0.9, "mann_whitney"), ("median", "bootstrap")],
)  # fmt: skip
def test_every_method_finds_a_clear_shift(rng, metric, method):
    a, b = rng.lognormal(0, 0.5, 400), rng.lognormal(0.4, 0.5, 400)
    c = ab.compare(a, b, metric, method=method, n_resamples=2000, seed=0)
    assert c.method == method and c.decision == "a_better" and c.ci[0] > 0


def test_paired_quantiles_ratio_proportion_and_cuped(rng):
    base = rng.lognormal(size=300)
    c = ab.compare(base, base * 1.2, "median", paired=True, n_resamples=2000, seed=0)
    assert c.method == "bootstrap_percentile" and c.relative_effect == pytest.approx(0.2)
    num_a, num_b = rng.gamma(2, 5, 1000), rng.gamma(2, 5, 1000) * 1.3
    den = rng.integers(1, 10, 1000).astype(float)
    r = ab.compare(np.c_[num_a * den, den], np.c_[num_b * den, den], "ratio")
    assert r.method == "delta" and r.decision == "a_better"
    p = ab.compare(rng.random(4000) < 0.1, rng.random(4000) < 0.13, "proportion")
    assert p.method == "z" and p.effect > 0
    x = rng.normal(size=2000)
    a, b = 5 * x[:1000] + rng.normal(size=1000), 5 * x[1000:] + 0.3 + rng.normal(size=1000)
    plain, adjusted = ab.compare(a, b), ab.compare(a, b, covariates=(x[:1000], x[1000:]))
    assert adjusted.method == "cuped+welch"
    assert (adjusted.ci[1] - adjusted.ci[0]) < 0.4 * (plain.ci[1] - plain.ci[0])
    two = ab.cuped(
        a, b, np.c_[x[:1000], rng.normal(size=1000)], np.c_[x[1000:], rng.normal(size=1000)]
    )
    assert two[2].shape == (2,) and two[2][0] == pytest.approx(5, rel=0.1)


def test_constant_samples_have_defined_results():
    same = ab.compare([3.0, 3.0, 3.0], [3.0, 3.0, 3.0])
    assert (same.p_value, same.decision, same.ci) == (1.0, "no_difference", (0.0, 0.0))
    apart = ab.compare([3.0, 3.0, 3.0], [4.0, 4.0, 4.0])
    assert apart.p_value == 0.0 and apart.decision == "a_better"
    assert np.isnan(ab.compare([0.0, 0.0], [1.0, 1.0]).relative_effect)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(a=[], b=[1.0, 2.0]), "at least 2"),
        (dict(a=[1.0, np.nan], b=[1.0, 2.0]), "NaN"),
        (dict(a=[1.0, 2.0, 3.0], b=[1.0, 2.0], paired=True), "equal length"),
        (dict(a=[1.0, 2.0], b=[1.0, 2.0], alpha=0.0), "alpha"),
        (dict(a=[1.0, 2.0], b=[1.0, 2.0], metric="mode"), "unknown"),
        (dict(a=[1.0, 2.0], b=[1.0, 2.0], metric="p100"), "percentile"),
        (dict(a=[1.0, 2.0], b=[1.0, 2.0], method="magic"), "magic"),
        (dict(a=[1.0, 2.0], b=[0.0, 2.0], metric="proportion"), "0/1"),
        (dict(a=[1.0, 2.0], b=[1.0, 2.0], metric="ratio"), "numerator"),
        (dict(a=np.arange(10.0), b=np.arange(10.0), metric="p99", method="order_statistic"),
         "too small"),
    ],
)  # fmt: skip
def test_bad_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ab.compare(**kwargs)


def test_planning_inverses_and_errors():
    n = ab.sample_size(0.2, 1.0)
    assert ab.minimum_detectable_effect(n, 1.0) <= 0.2 < ab.minimum_detectable_effect(n - 1, 1.0)
    assert ab.sample_size(0.2, 1.0, sd_b=2.0) > 2 * n  # Welch: b's larger spread costs samples
    mde = ab.minimum_detectable_effect(2000, metric="proportion", baseline=0.1)
    assert ab.sample_size(mde * 1.001, metric="proportion", baseline=0.1) <= 2000
    with pytest.raises(ValueError, match="sd"):
        ab.sample_size(0.2, 0.0)
    with pytest.raises(ValueError, match="power"):
        ab.sample_size(0.2, 1.0, power=1.0)
    with pytest.raises(ValueError, match="sampler"):
        ab.sample_size(0.2, metric="p95")


def test_multiplicity_srm_margins_and_change_points(rng):
    p = [0.01, 0.04, 0.03, 0.5]
    assert ab.holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert ab.benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p))
    assert not ab.srm_check([5010, 4990]).mismatch
    assert (
        ab.srm_check([5400, 4600]).mismatch and "MISMATCH" in ab.srm_check([5400, 4600]).summary()
    )
    assert not ab.srm_check([2000, 8000], [1, 4]).mismatch
    a, b = rng.normal(10, 1, 2000), rng.normal(10.02, 1, 2000)
    assert ab.equivalence(a, b, margin=0.2).passed
    assert not ab.equivalence(a, b + 1, margin=0.2).passed
    assert ab.non_inferiority(a, b + 0.05, margin=0.2).passed  # slightly slower, within margin
    assert not ab.non_inferiority(a, b + 0.5, margin=0.2).passed
    assert ab.non_inferiority(a, b - 0.05, margin=0.2, higher_is_better=True).passed
    history = np.r_[rng.normal(100, 1, 40), rng.normal(104, 1, 30)]
    found = ab.detect_changes(history)
    assert [c.index for c in found] == [40] and found[0].relative_change == pytest.approx(
        0.04, abs=0.01
    )
    assert ab.detect_changes(rng.normal(100, 1, 100)) == []
    with pytest.raises(ValueError, match="margin"):
        ab.equivalence(a, b, margin=-1)
