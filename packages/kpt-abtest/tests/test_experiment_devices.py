"""Cross-device benchmarking with a fake timer (no torch needed) and, if present, real torch."""

import numpy as np
import pytest

from kpt.abtest import benchmark_devices


def _fake_timer(seconds_per_step, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)

    def timer(device, step):
        step()
        return seconds_per_step[str(device)] * (1 + noise * rng.standard_normal())

    return timer


def test_relative_speed_and_its_interval_cover_the_truth():
    truth = {"cpu": 0.010, "fast": 0.0025, "same": 0.010}
    bench = benchmark_devices(
        lambda device: lambda: None, list(truth), trials=40, timer=_fake_timer(truth)
    )
    fast, same = bench.devices["fast"], bench.devices["same"]
    assert fast.speedup == pytest.approx(4.0, rel=0.03)
    assert fast.speedup_ci[0] < 4.0 < fast.speedup_ci[1]
    assert same.speedup_ci[0] < 1.0 < same.speedup_ci[1]
    assert bench.devices["cpu"].speedup == 1.0
    assert (
        f"fast: {fast.mean_s:.4g} s/step, {fast.speedup:.3g}x the speed of cpu" in bench.summary()
    )


def test_cost_per_step_prefers_the_cheaper_device_per_step_not_per_hour():
    truth = {"big": 0.001, "small": 0.004}  # big is 4x faster, costs 3x as much an hour
    bench = benchmark_devices(
        lambda d: lambda: None,
        list(truth),
        prices={"big": 3.0, "small": 1.0},
        trials=20,
        timer=_fake_timer(truth, noise=0.01),
    )
    big, small = bench.devices["big"], bench.devices["small"]
    assert big.cost_per_million_steps == pytest.approx(3.0 / 3600 * 1e6 * 0.001, rel=0.02)
    assert big.cost_per_million_steps < small.cost_per_million_steps
    assert big.cost_ci[0] <= big.cost_per_million_steps <= big.cost_ci[1]
    assert "Cheapest per step: big" in bench.summary()


def test_setup_runs_once_per_device_and_steps_alternate():
    setups, runs = [], []

    def workload(device):
        setups.append(device)
        return lambda: runs.append(device)

    benchmark_devices(workload, ["x", "y"], trials=4, warmup=1, timer=lambda d, s: s() or 1.0)
    assert setups == ["x", "y"]
    warmup_runs, abba_runs = ["x", "y"], ["x", "y", "y", "x", "x", "y", "y", "x"]
    assert runs == warmup_runs + abba_runs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"devices": []}, "no devices"),
        ({"devices": ["a", "a"]}, "distinct"),
        ({"trials": 1}, "trials"),
        ({"baseline": "z"}, "baseline 'z'"),
        ({"prices": {"z": 1.0}}, r"prices given for \['z'\]"),
        ({"prices": {"a": -1.0}}, "price for 'a'"),
    ],
)
def test_bad_settings_are_explained(kwargs, match):
    options = {"devices": ["a", "b"], "timer": lambda d, s: 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        benchmark_devices(lambda d: lambda: None, **options)


def test_a_real_torch_workload_on_cpu():
    torch = pytest.importorskip("torch")

    def matmul(device):
        x = torch.randn(64, 64, device=device)
        return lambda: x @ x

    bench = benchmark_devices(matmul, ["cpu"], trials=5, warmup=1)
    assert bench.devices["cpu"].mean_s > 0


def test_the_compare_configs_example_runs_on_cpu(tmp_path):
    pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "examples" / "compare_configs.py"
    spec = importlib.util.spec_from_file_location("compare_configs", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.compare_configs("cpu", steps=4, width=16, batch=8)
    assert result.arms == ("fp32", "bf16")
    assert len(result.samples["bf16"]["step_ms"]) == 4
    assert example.main(["--steps", "3", "--width", "8", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").exists()
