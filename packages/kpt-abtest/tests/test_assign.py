import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from kpt.abtest._assign import Assigner, assign

UNITS = [f"user-{i}" for i in range(6000)]


@pytest.mark.parametrize("layout", ["uniform", "sticky"])
@pytest.mark.parametrize("weights", [{"a": 1, "b": 1}, {"a": 0.7, "b": 0.2, "c": 0.1}])
def test_arms_are_balanced_to_their_weights(layout, weights):
    assigner = Assigner(weights, salt="balance", layout=layout)
    counts = assigner.counts(UNITS)
    expected = np.array(list(assigner.expected_fractions().values())) * len(UNITS)
    # A correct hash passes at the 0.1% level with probability 0.999.
    assert stats.chisquare(list(counts.values()), expected).pvalue > 1e-3


@pytest.mark.parametrize("layout", ["uniform", "sticky"])
def test_assignment_is_stable_across_processes(layout):
    here = Assigner(["a", "b", "c"], salt="s", layout=layout).assign_many(UNITS[:200])
    code = (
        "from kpt.abtest._assign import Assigner;"
        f"print(','.join(Assigner(['a','b','c'], salt='s', layout={layout!r})"
        f".assign_many([f'user-{{i}}' for i in range(200)])))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash() must not matter
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == here


@pytest.mark.parametrize("layout", ["uniform", "sticky"])
def test_different_salts_give_independent_assignments(layout):
    first = Assigner(["a", "b"], salt="exp-1", layout=layout).assign_many(UNITS)
    second = Assigner(["a", "b"], salt="exp-2", layout=layout).assign_many(UNITS)
    table = np.zeros((2, 2))
    for x, y in zip(first, second):
        table["ab".index(x), "ab".index(y)] += 1
    assert stats.chi2_contingency(table).pvalue > 1e-3
    # and not a relabelling: about half the units agree
    agree = np.trace(table) / len(UNITS)
    assert abs(agree - 0.5) < 4 * 0.5 / np.sqrt(len(UNITS))


def test_sticky_ramp_moves_only_units_that_must_move():
    before = Assigner({"control": 0.9, "treatment": 0.1}, salt="ramp").assign_many(UNITS)
    after = Assigner({"control": 0.5, "treatment": 0.5}, salt="ramp").assign_many(UNITS)
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert all(b == "control" and a == "treatment" for b, a in moved)
    # the minimum that must move is 40% of units
    assert abs(len(moved) / len(UNITS) - 0.4) < 0.03


def test_sticky_new_arm_takes_units_only_into_itself():
    two = Assigner(["a", "b"], salt="grow").assign_many(UNITS)
    three = Assigner(["a", "b", "c"], salt="grow").assign_many(UNITS)
    assert all(old == new or new == "c" for old, new in zip(two, three))


def test_uniform_ramp_keeps_last_arm_units():
    before = Assigner({"control": 0.9, "treatment": 0.1}, salt="r", layout="uniform")
    after = Assigner({"control": 0.5, "treatment": 0.5}, salt="r", layout="uniform")
    for unit in UNITS[:2000]:
        if before.assign(unit) == "treatment":
            assert after.assign(unit) == "treatment"


def test_zero_weight_arm_gets_nothing():
    assigner = Assigner({"a": 1, "off": 0}, salt="z")
    assert assigner.counts(UNITS[:500])["off"] == 0
    assert Assigner({"a": 1, "off": 0}, layout="uniform").counts(UNITS[:500])["off"] == 0


def test_function_form_matches_class():
    assert assign("u1", ["a", "b"], salt="x") == Assigner(["a", "b"], salt="x").assign("u1")


@pytest.mark.parametrize(
    "arms, kwargs, match",
    [
        ([], {}, "no arms"),
        (["a", "a"], {}, "unique"),
        ({"a": -1, "b": 1}, {}, "weights must be"),
        ({"a": float("nan"), "b": 1}, {}, "weights must be"),
        (["a", "b"], {"weights": [1]}, "one weight per arm"),
        (["a", "b"], {"layout": "random"}, "layout 'random' unknown"),
    ],
)
def test_bad_arms_are_explained(arms, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Assigner(arms, **kwargs)
