"""A plain compare() result gets a report and a plot; plots show what was tested."""

import numpy as np
import pytest

import kpt.abtest as ab
from kpt.abtest import Experiment, load_report, to_markdown, write_report


@pytest.fixture(scope="module")
def comparison():
    rng = np.random.default_rng(4)
    return ab.compare(rng.lognormal(0, 1, 200), rng.lognormal(-0.4, 1, 200), method="mann_whitney")


def test_a_comparison_gets_markdown_and_json(comparison, tmp_path):
    text = to_markdown(comparison)
    assert comparison.summary() in text and "Moses (Mann-Whitney inversion) interval" in text
    assert "## Arms" not in text  # a Comparison holds no samples: no empty table
    saved = load_report(write_report(comparison, tmp_path / "c.json"))
    assert saved["interval"] == comparison.interval and saved["p_value"] == comparison.p_value
    assert to_markdown(saved) == text == write_report(comparison, tmp_path / "c.md").read_text()


def _axes():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    return plt, fig, ax


def test_a_comparison_gets_a_forest_plot_with_a_colour_legend(comparison, tmp_path):
    plt, fig, ax = _axes()
    from kpt.abtest._plots import draw_forest, plot_report

    assert [p.name for p in plot_report(comparison, tmp_path)] == ["forest.png"]
    from kpt.abtest._report import report_data

    draw_forest(ax, report_data(comparison))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["significant (p < 0.05)", "not significant"]
    assert "Moses" in ax.get_title()
    plt.close(fig)


@pytest.fixture(scope="module")
def p95_run():
    rng = np.random.default_rng(9)
    arms = {"base": lambda: rng.lognormal(0, 0.5), "new": lambda: rng.lognormal(0.1, 0.5)}
    return Experiment(arms, metric="ms", statistic="p95", max_trials=120, warmup=0).run()


def test_trajectory_of_a_quantile_metric_is_not_empty(p95_run):
    # 120 trials per arm are too few for a p95 interval (~400 needed): the plot used to be
    # blank. Now the estimate is drawn at every look and the undefined stretch is labelled.
    plt, fig, ax = _axes()
    from kpt.abtest._plots import draw_trajectory

    draw_trajectory(ax, p95_run.to_dict())
    drawn = [line.get_ydata() for line in ax.get_lines() if len(line.get_ydata()) > 2]
    assert drawn and np.isfinite(np.asarray(drawn[0], float)).all()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "new: estimate" in labels and any("not defined yet" in t for t in labels)
    plt.close(fig)


def test_distributions_mark_the_tested_quantile(p95_run):
    plt, fig, ax = _axes()
    from kpt.abtest._plots import draw_distributions

    draw_distributions(ax, p95_run.to_dict())
    marks = {
        line.get_label(): line.get_xdata()[0] for line in ax.get_lines() if len(line.get_xdata())
    }
    for arm in ("base", "new"):
        values = p95_run.samples[arm]["ms"]
        assert marks[f"{arm} q0.95"] == pytest.approx(np.quantile(values, 0.95))
    assert "q0.95" in ax.get_title()
    plt.close(fig)
