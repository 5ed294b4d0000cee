import json
import time

import numpy as np
import pytest

from kpt.abtest import Experiment
from kpt.abtest._experiment import block_order


class DriftingMachine:
    """Identical arms on a machine that slows down linearly: any effect found is drift."""

    def __init__(self, slope=0.01, noise=0.001, seed=1, effects=None):
        self.step = 0
        self.slope = slope
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.effects = effects or {}

    def arm(self, name):
        def trial():
            self.step += 1
            base = 1.0 + self.effects.get(name, 0.0)
            return base + self.slope * self.step + self.noise * self.rng.standard_normal()

        return trial


def _drift_experiment(schedule, **kwargs):
    machine = DriftingMachine()
    arms = {"a": machine.arm("a"), "b": machine.arm("b")}
    options = dict(metric="latency", warmup=0, max_trials=40, sequential=False, seed=3)
    options.update(kwargs)
    return Experiment(arms, schedule=schedule, **options).run()


def test_abba_cancels_linear_drift_that_blocked_order_reports_as_an_effect():
    blocked = _drift_experiment("blocked")
    abba = _drift_experiment("abba")
    # Blocked: all 40 a trials run first, so b looks ~40 steps * 0.01 = 0.4 slower.
    assert blocked.comparisons["b"].decision == "a_better"
    assert blocked.comparisons["b"].effect == pytest.approx(0.4, rel=0.05)
    # ABBA: each block's a and b trials have the same mean position: no effect at all.
    assert abba.comparisons["b"].decision == "no_difference"
    assert abs(abba.comparisons["b"].effect) < 0.01 * 0.4


def test_interleaved_order_removes_drift_in_expectation():
    effects = [_drift_experiment("interleaved", seed=s).comparisons["b"].effect for s in range(8)]
    # a random order within each block leaves at most one step of drift (0.01) per block
    assert abs(np.mean(effects)) < 0.01
    assert max(abs(e) for e in effects) < 0.02


def test_block_orders_hold_every_arm_equally_often():
    rng = np.random.default_rng(0)
    assert block_order("abba", 3, rng) == [0, 1, 2, 2, 1, 0]
    for _ in range(5):
        assert sorted(block_order("interleaved", 3, rng)) == [0, 1, 2]


def test_sequential_rule_stops_early_on_a_large_effect():
    rng = np.random.default_rng(5)
    arms = {
        "slow": lambda: 10.0 + rng.normal(0, 1.0),
        "fast": lambda: 8.0 + rng.normal(0, 1.0),
    }
    result = Experiment(arms, metric="ms", max_trials=400, warmup=1).run()
    n = len(result.samples["fast"]["ms"])
    assert n < 400
    assert result.decisions["fast"] == "b_better"
    assert "sequential" in result.stopped_by
    assert result.trajectory["fast"], "every look is recorded"
    assert result.trajectory["fast"][-1]["decision"] == "b_better"
    assert "fast vs slow" in result.summary()


def test_no_effect_runs_to_the_budget_or_futility_without_a_false_winner():
    rng = np.random.default_rng(6)
    arms = {"a": lambda: rng.normal(5, 1), "b": lambda: rng.normal(5, 1)}
    result = Experiment(arms, metric="v", max_trials=60, warmup=0).run()
    assert result.decisions["b"] not in ("a_better", "b_better")


def test_configuration_arms_and_wall_time_metric():
    calls = []

    def run(config):
        calls.append(config["sleep"])
        time.sleep(config["sleep"])

    arms = {"short": {"sleep": 0.0}, "long": {"sleep": 0.004}}
    result = Experiment(arms, run, warmup=2, max_trials=12, sequential=False).run()
    times = result.samples
    assert set(times["long"]) == {"time_s"}
    assert len(times["long"]["time_s"]) == 12
    assert len(calls) == 2 * 2 + 2 * 12  # warm-up trials run but are not recorded
    assert result.comparisons["long"].decision == "a_better"


def test_dict_results_record_every_metric_and_primary_is_compared():
    counter = iter(range(10_000))
    arms = {
        "a": lambda: {"tokens_s": 100 + next(counter) % 3, "mem": 1.0},
        "b": lambda: {"tokens_s": 120 + next(counter) % 3, "mem": 1.0},
    }
    result = Experiment(
        arms, metric="tokens_s", higher_is_better=True, max_trials=20, sequential=False
    ).run()
    assert set(result.samples["a"]) == {"tokens_s", "mem"}
    assert result.comparisons["b"].decision == "b_better"
    json.dumps(result.to_dict())  # reports need plain JSON types


def test_three_arms_compare_each_challenger_with_the_baseline():
    rng = np.random.default_rng(8)
    arms = {
        "base": lambda: rng.normal(10, 1),
        "same": lambda: rng.normal(10, 1),
        "better": lambda: rng.normal(7, 1),
    }
    result = Experiment(arms, metric="ms", max_trials=80, warmup=0).run()
    assert set(result.comparisons) == {"same", "better"}
    assert result.decisions["better"] == "b_better"
    assert result.order[:6] == ["base", "same", "better", "better", "same", "base"]


def test_time_budget_stops_the_run():
    arms = {"a": lambda: time.sleep(0.002), "b": lambda: time.sleep(0.002)}
    result = Experiment(arms, max_trials=10_000, sequential=False, time_budget_s=0.1).run()
    assert "time budget" in result.stopped_by
    assert len(result.samples["a"]["time_s"]) < 100


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arms": {"a": lambda: 1.0}}, "at least two arms"),
        ({"schedule": "random"}, "schedule 'random' unknown"),
        ({"baseline": "c"}, "baseline 'c' is not an arm"),
        ({"max_trials": 1}, "max_trials"),
        ({"alpha": 1.5}, "alpha"),
        ({"warmup": -1}, "warmup"),
        ({"arms": {"a": {"x": 1}, "b": {"x": 2}}}, "need run="),
    ],
)
def test_bad_settings_are_explained(kwargs, match):
    options = {"arms": {"a": lambda: 1.0, "b": lambda: 2.0}, **kwargs}
    with pytest.raises(ValueError, match=match):
        Experiment(options.pop("arms"), **options)


def test_bad_trial_results_are_explained():
    arms = {"a": lambda: "fast", "b": lambda: 1.0}
    with pytest.raises(TypeError, match="returned str"):
        Experiment(arms, warmup=0).run()
    arms = {"a": lambda: {"x": 1.0}, "b": lambda: {"x": 1.0}}
    with pytest.raises(ValueError, match="metric 'ms' was not measured; trials returned: x"):
        Experiment(arms, metric="ms", warmup=0, max_trials=4, sequential=False).run()


def test_summary_names_the_metric_it_tested():
    counter = iter(range(10_000))
    arms = {
        "fp32": lambda: {"loss": 5 + next(counter) % 3, "sim_ms": 8.6},
        "bf16": lambda: {"loss": 5 + next(counter) % 3, "sim_ms": 13.0},
    }
    result = Experiment(arms, metric="loss", max_trials=10, sequential=False).run()
    assert "bf16 vs fp32 on metric 'loss' (a = fp32, b = bf16): mean of b" in result.summary()


def test_progress_reports_every_trial_warmup_first_then_measured_counts():
    seen = []
    arms = {"a": lambda: 1.0, "b": lambda: 2.0}
    result = Experiment(
        arms, metric="x", warmup=1, max_trials=6, sequential=False, progress=seen.append
    ).run()
    assert [(t.arm, t.warmup, t.measured) for t in seen[:2]] == [("a", True, 0), ("b", True, 0)]
    measured = [t for t in seen if not t.warmup]
    assert [t.measured for t in measured] == list(range(1, len(result.order) + 1))
    assert [t.arm for t in measured] == result.order
    assert {t.budget for t in seen} == {12}
    assert measured[0].values == {"x": 1.0}
