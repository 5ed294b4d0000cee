"""SequentialTest: anytime-valid under continuous monitoring, and it does stop when it should."""

import numpy as np
import pytest

import kpt.abtest as ab
from kpt.abtest._sequential import mixture_scale, normal_mixture_radius

ALPHA = 0.05


def mc_bound(p: float, reps: int, sigmas: float = 3.0) -> float:
    """p plus `sigmas` Monte-Carlo standard errors of a proportion estimated from reps runs."""
    return p + sigmas * np.sqrt(p * (1 - p) / reps)


DISTRIBUTIONS = {
    "normal": lambda rng, size: rng.normal(10.0, 2.0, size),
    "lognormal": lambda rng, size: rng.lognormal(0.0, 1.0, size),
    # Pareto with shape 3: heavy right tail, finite variance (latency-like).
    "pareto": lambda rng, size: 1.0 + rng.pareto(3.0, size),
}


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_mean_boundary_holds_alpha_when_checked_after_every_batch(dist):
    # Vectorized over 3000 A/A trajectories, 60 looks of 20 per arm; the radius formula is the
    # one SequentialTest uses. MC standard error of the rate: 0.004.
    reps, batch, looks = 3000, 20, 60
    rng = np.random.default_rng(21)
    draw = DISTRIBUTIONS[dist]
    a, b = draw(rng, (reps, batch * looks)), draw(rng, (reps, batch * looks))
    ns = np.arange(1, looks + 1) * batch
    mean_a, mean_b = np.cumsum(a, 1)[:, ns - 1] / ns, np.cumsum(b, 1)[:, ns - 1] / ns
    var_a = (np.cumsum(a * a, 1)[:, ns - 1] - ns * mean_a**2) / (ns - 1)
    var_b = (np.cumsum(b * b, 1)[:, ns - 1] - ns * mean_b**2) / (ns - 1)
    radius = normal_mixture_radius(
        np.sqrt(var_a / ns + var_b / ns), ns, ALPHA, mixture_scale(ALPHA, 500)
    )
    ever = (np.abs(mean_b - mean_a) > radius).any(axis=1)
    assert ever.mean() <= mc_bound(ALPHA, reps)


@pytest.mark.parametrize("metric", ["mean", "p95"])
@pytest.mark.parametrize("dist", ["lognormal", "pareto"])
def test_class_aa_under_continuous_monitoring(metric, dist):
    reps, looks = 300, 30  # MC standard error 0.0126
    rng = np.random.default_rng(22)
    draw = DISTRIBUTIONS[dist]
    stopped = 0
    for _ in range(reps):
        test = ab.SequentialTest(ALPHA, metric=metric, tuning_n=300)
        for _ in range(looks):
            test.update(draw(rng, 20), draw(rng, 20))
        stopped += test.decision in ("a_better", "b_better")
    assert stopped / reps <= mc_bound(ALPHA, reps)


def test_paired_and_naive_peeking_contrast():
    # The naive t-test checked after each of 30 batches rejects far more often than alpha.
    reps, looks, batch = 400, 30, 10
    rng = np.random.default_rng(23)
    naive = kpt = 0
    for _ in range(reps):
        base = rng.normal(size=looks * batch)
        a, b = base + rng.normal(size=base.size), base + rng.normal(size=base.size)
        test = ab.SequentialTest(ALPHA, paired=True, tuning_n=100)
        fired = False
        for k in range(1, looks + 1):
            sl = slice((k - 1) * batch, k * batch)
            test.update(a[sl], b[sl])
            fired = fired or ab.compare(a[: k * batch], b[: k * batch], paired=True).p_value < ALPHA
        naive += fired
        kpt += test.decision != "continue"
    assert naive / reps > 0.15  # ~0.25-0.3 expected: peeking inflates the error
    assert kpt / reps <= mc_bound(ALPHA, reps)


def test_stops_for_efficacy_in_the_right_direction():
    rng = np.random.default_rng(24)
    test = ab.SequentialTest(tuning_n=200)  # lower is better: b's smaller latency wins
    while test.decision == "continue":
        test.update(rng.lognormal(0.3, 0.5, 25), rng.lognormal(0.0, 0.5, 25))
    assert test.decision == "b_better"
    assert test.interval[1] < 0 < test.n_a < 2000
    up = ab.SequentialTest(higher_is_better=True, tuning_n=200)
    while up.decision == "continue":
        up.update(rng.normal(0, 1, 25), rng.normal(0.5, 1, 25))
    assert up.decision == "b_better" and up.interval[0] > 0


def test_futility_and_budget():
    rng = np.random.default_rng(25)
    test = ab.SequentialTest(min_effect=0.5, tuning_n=200)
    while test.decision == "continue":
        test.update(rng.normal(0, 1, 50), rng.normal(0, 1, 50))
    assert test.decision == "futility"
    assert test.interval[0] > -0.5 and test.interval[1] < 0.5
    capped = ab.SequentialTest(max_n=100)
    for _ in range(4):
        capped.update(rng.normal(0, 1, 25), rng.normal(0, 1, 25))
    assert capped.decision == "inconclusive"


def test_decision_is_final_and_bad_input_is_refused():
    rng = np.random.default_rng(26)
    test = ab.SequentialTest(tuning_n=50)
    while test.decision == "continue":
        test.update(rng.normal(0, 1, 30), rng.normal(3, 1, 30))
    decided, interval = test.decision, test.interval
    test.update(rng.normal(3, 1, 30), rng.normal(0, 1, 30))
    assert (test.decision, test.interval) == (decided, interval)
    with pytest.raises(ValueError, match="NaN"):
        ab.SequentialTest().update([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="equal length"):
        ab.SequentialTest(paired=True).update([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="alpha"):
        ab.SequentialTest(alpha=1.5)
    with pytest.raises(ValueError, match="metric"):
        ab.SequentialTest(metric="mode")
