import json

import numpy as np
import pytest

from kpt.abtest import (
    Experiment,
    benchmark_devices,
    load_report,
    to_json,
    to_markdown,
    write_report,
)


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(11)
    arms = {"base": lambda: rng.normal(10, 1), "fast": lambda: rng.normal(8, 1)}
    return Experiment(arms, metric="ms", max_trials=30, warmup=0, sequential=False).run()


def test_json_round_trips_and_holds_the_numbers(result, tmp_path):
    path = write_report(result, tmp_path / "r.json")
    data = load_report(path)
    assert data["comparisons"]["fast"]["decision"] == result.comparisons["fast"].decision
    assert data["samples"]["fast"]["ms"] == pytest.approx(list(result.samples["fast"]["ms"]))
    assert data["summary"] == result.summary()


def test_json_writes_non_finite_numbers_as_null():
    text = to_json({"x": float("nan"), "y": [1.0, float("inf")]})
    assert json.loads(text) == {"x": None, "y": [1.0, None]}


def test_markdown_leads_with_the_verdict_and_tabulates_arms(result, tmp_path):
    text = to_markdown(result)
    assert text.startswith("# A/B experiment")
    assert text.index("## Verdict") < text.index("## Arms") < text.index("## Comparisons")
    assert "| fast | 30 |" in text and "| base | 30 |" in text
    assert result.comparisons["fast"].decision in text
    # the same Markdown from the saved JSON
    saved = load_report(write_report(result, tmp_path / "r.json"))
    assert to_markdown(saved) == text
    assert write_report(result, tmp_path / "r.md").read_text() == text


def test_device_benchmark_markdown_shows_speed_and_cost():
    rng = np.random.default_rng(0)
    speed = {"slow": 2.0, "fast": 1.0}
    bench = benchmark_devices(
        lambda device: lambda: None,
        ["slow", "fast"],
        prices={"fast": 4.0},
        trials=10,
        timer=lambda device, step: speed[device] * (1 + 0.01 * rng.standard_normal()),
    )
    text = to_markdown(bench)
    assert "| fast | 10 |" in text and "no price" in text


def test_bad_report_inputs_are_explained(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.json or \.md"):
        write_report({"a": 1}, tmp_path / "r.txt")
    with pytest.raises(TypeError, match="cannot report a int"):
        to_json(3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_report(tmp_path / "bad.json")


def test_plots_are_written_as_png(result, tmp_path):
    pytest.importorskip("matplotlib")
    from kpt.abtest._plots import plot_report, plot_trajectory

    paths = plot_report(result, tmp_path)
    assert [p.name for p in paths] == ["distributions.png", "forest.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no sequential trajectory"):
        plot_trajectory(result, tmp_path / "t.png")


def test_trajectory_plot_from_a_sequential_run(tmp_path):
    pytest.importorskip("matplotlib")
    from kpt.abtest._plots import plot_trajectory

    data = {
        "metric": "ms",
        "trajectory": {"b": [{"n": n, "low": -1 / n, "high": 1 / n} for n in range(10, 50, 10)]},
    }
    assert plot_trajectory(data, tmp_path / "t.png").stat().st_size > 1000
