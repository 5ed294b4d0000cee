"""benchmark_devices: simulated times are labelled everywhere and not ranked against measured."""

import math

import numpy as np
import pytest

from kpt.abtest import benchmark_devices, to_markdown

SECONDS = {"cpu": 0.113, "kpt_sim:0": 0.001, "cuda:0": 0.002}


def _bench(devices, **options):
    rng = np.random.default_rng(1)

    def timer(device, step):
        return SECONDS[device] * (1 + 0.01 * rng.standard_normal())

    return benchmark_devices(
        lambda device: lambda: None, devices, trials=8, warmup=0, timer=timer,
        simulated=["kpt_sim:0"], prices={d: 1.0 for d in devices}, **options,
    )  # fmt: skip


def test_simulated_device_is_labelled_and_not_ranked_against_measured():
    bench = _bench(["cpu", "kpt_sim:0", "cuda:0"])
    sim = bench.devices["kpt_sim:0"]
    assert sim.clock == "simulated" and bench.devices["cpu"].clock == "measured"
    assert math.isnan(sim.speedup)  # was "113x the speed of cpu"
    text = bench.summary()
    assert "the speed of" not in text.split("kpt_sim:0 [simulated]")[1].splitlines()[0]
    assert (
        f"kpt_sim:0 [simulated]: {sim.mean_s:.4g} simulated s/step; not ranked against cpu" in text
    )
    assert "Cheapest per step among measured devices: cuda:0" in text
    assert "Cheapest per step among simulated devices: kpt_sim:0 [simulated]" in text
    assert "Cheapest per step: " not in text  # never one ranking across both clocks
    md = to_markdown(bench)
    assert f"| kpt_sim:0 [simulated] | 8 | {sim.mean_s:.4g} (simulated) | not ranked" in md
    assert "not a measurement" in md
    assert to_markdown(bench.to_dict()) == md


def test_ranking_across_clocks_only_when_asked():
    bench = _bench(["cpu", "kpt_sim:0"], rank_simulated_against_measured=True)
    sim = bench.devices["kpt_sim:0"]
    assert sim.speedup == pytest.approx(113, rel=0.05)
    assert "the speed of cpu (simulated vs measured time)" in bench.summary()
    assert "(mixing simulated and measured times)" in bench.summary()


def test_kpt_sim_is_simulated_by_default_only_under_device_timers():
    from kpt.abtest._bench import device_timer, simulated_devices, wall_timer

    names = ["cpu", "kpt_sim:0", "kpt_sim"]
    assert simulated_devices(names, None) == {"kpt_sim:0", "kpt_sim"}
    assert simulated_devices(names, device_timer) == {"kpt_sim:0", "kpt_sim"}
    assert simulated_devices(names, wall_timer) == set()  # host wall time is measured
    with pytest.raises(ValueError, match="names devices not benchmarked"):
        _bench(["cpu"])
