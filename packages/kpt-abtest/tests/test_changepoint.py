"""Change points: E-Divisive finds shifts in mean and in spread; quiet on pure noise."""

import numpy as np
import pytest

import kpt.abtest as ab


def test_edivisive_finds_two_mean_shifts_with_p_values():
    rng = np.random.default_rng(60)
    history = np.concatenate(
        [rng.normal(100, 1, 60), rng.normal(104, 1, 50), rng.normal(98, 1, 40)]
    )
    found = ab.detect_changes(history, method="edivisive")
    assert [c.index for c in found] == pytest.approx([60, 110], abs=2)
    assert all(c.p_value is not None and c.p_value <= 0.05 for c in found)
    assert found[0].mean_after - found[0].mean_before == pytest.approx(4, abs=0.6)
    assert all(c.p_value is None for c in ab.detect_changes(history))  # PELT has none


def test_edivisive_sees_a_change_in_spread_that_pelt_cannot():
    rng = np.random.default_rng(61)
    history = np.concatenate([rng.normal(50, 0.5, 80), rng.normal(50, 4.0, 80)])
    found = ab.detect_changes(history, method="edivisive")
    assert len(found) >= 1 and abs(found[0].index - 80) <= 6
    assert ab.detect_changes(history) == [] or abs(ab.detect_changes(history)[0].index - 80) > 6


def test_edivisive_false_alarm_rate_on_noise_is_about_alpha():
    rng = np.random.default_rng(62)
    runs = 40
    alarms = sum(
        bool(ab.detect_changes(rng.lognormal(0, 0.3, 60), method="edivisive", permutations=99,
                               seed=i))
        for i in range(runs)
    )  # fmt: skip
    # The first split is tested at alpha = 0.05: expect ~2 of 40; 7 would be 3+ SE too many.
    assert alarms <= 7


def test_edivisive_is_reproducible_and_checks_input():
    rng = np.random.default_rng(63)
    history = np.concatenate([rng.normal(0, 1, 30), rng.normal(3, 1, 30)])
    first = ab.detect_changes(history, method="edivisive", seed=5)
    assert first == ab.detect_changes(history, method="edivisive", seed=5)
    with pytest.raises(ValueError, match="method='binseg'"):
        ab.detect_changes(history, method="binseg")
    with pytest.raises(ValueError, match="permutations=5"):
        ab.detect_changes(history, method="edivisive", permutations=5)
    with pytest.raises(ValueError, match="NaN"):
        ab.detect_changes([1.0, np.nan, 2.0], method="edivisive")
    assert ab.detect_changes([1.0, 2.0, 3.0], method="edivisive") == []
