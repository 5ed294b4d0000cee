"""Plots (matplotlib, Agg backend): distributions, interval forest, sequential trajectory.

Each function takes an ExperimentResult (or its JSON dict) and a file path, and returns the path.
matplotlib is the optional extra ``plots``: ``pip install 'kpt-abtest[plots]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kpt.abtest._report import report_data
from kpt.abtest._validate import parse_quantile


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plots need matplotlib, which is not installed: pip install 'kpt-abtest[plots]'"
        ) from None
    matplotlib.use("Agg", force=True)  # files only: never open a window, works headless
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _tested_quantile(statistic: Any) -> float | None:
    """The quantile level an experiment tested ("p95", "median", "0.9"), None for the mean."""
    if statistic in (None, "mean"):
        return None
    try:
        return parse_quantile(statistic) or parse_quantile(float(statistic))
    except (TypeError, ValueError):
        return None


def draw_distributions(ax, data: dict) -> None:
    """Histograms per arm on shared bins, each arm's tested statistic marked (dashed)."""
    metric = data.get("metric", "value")
    samples = {arm: np.asarray(m.get(metric, []), float) for arm, m in data["samples"].items()}
    everything = np.concatenate([v for v in samples.values() if v.size] or [np.zeros(1)])
    bins = np.histogram_bin_edges(everything, bins=min(50, max(10, everything.size // 10)))
    q = _tested_quantile(data.get("statistic"))
    name = "mean" if q is None else ("median" if q == 0.5 else f"q{q:g}")
    for arm, values in samples.items():
        if values.size:
            (line,) = ax.plot([], [])
            color = line.get_color()
            ax.hist(values, bins=bins, alpha=0.45, label=f"{arm} (n={values.size})", color=color)
            mark = float(values.mean()) if q is None else float(np.quantile(values, q))
            ax.axvline(mark, color=color, linestyle="--", linewidth=1.2, label=f"{arm} {name}")
    ax.set_xlabel(metric)
    ax.set_ylabel("trials")
    ax.set_title(f"Distribution per arm (dashed: the tested statistic, {name})")
    ax.legend()


def plot_distributions(result: Any, path: str | Path) -> Path:
    """One histogram per arm of the primary metric, the tested statistic marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    draw_distributions(ax, report_data(result))
    return _save(fig, path)


def draw_forest(ax, data: dict) -> None:
    """Relative effect and interval per challenger; the colour legend says what is significant."""
    from matplotlib.lines import Line2D

    comparisons = data.get("comparisons", {})
    if not comparisons:
        raise ValueError("the result holds no comparisons to plot")
    intervals = set()
    for row, c in enumerate(comparisons.values()):
        low, high = c.get("relative_ci") or (np.nan, np.nan)
        low, high = (np.nan if v is None else v for v in (low, high))
        estimate = c.get("relative_effect")
        estimate = np.nan if estimate is None else estimate
        decided = c.get("decision") not in (None, "no_difference")
        ax.plot([100 * low, 100 * high], [row, row], color="C1" if decided else "C0", lw=2)
        ax.plot([100 * estimate], [row], "o", color="C1" if decided else "C0")
        intervals.add(c.get("interval", "Welch t"))
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(comparisons)), list(comparisons))
    ax.set_xlabel(f"relative difference vs {data.get('baseline', 'baseline')} (%)")
    alpha = next(iter(comparisons.values())).get("alpha", 0.05)
    ax.legend(
        handles=[
            Line2D([], [], color="C1", lw=2, marker="o", label=f"significant (p < {alpha:g})"),
            Line2D([], [], color="C0", lw=2, marker="o", label="not significant"),
        ],
        loc="best",
    )
    ax.set_title(f"Effects with {', '.join(sorted(intervals))} intervals")


def plot_forest(result: Any, path: str | Path) -> Path:
    """Relative effect of every challenger against the baseline, with its interval."""
    plt = _pyplot()
    data = report_data(result)
    fig, ax = plt.subplots(figsize=(7, 1.6 + 0.6 * len(data.get("comparisons", {}))))
    draw_forest(ax, data)
    return _save(fig, path)


def _number(value: Any) -> float:
    return np.nan if value is None else float(value)


def draw_trajectory(ax, data: dict) -> None:
    """Estimate after every look and the interval where it is defined (quantile intervals need
    ~20 / min(q, 1 - q) values per arm first: that stretch is shaded and labelled)."""
    trajectory = {arm: pts for arm, pts in (data.get("trajectory") or {}).items() if pts}
    if not trajectory:
        raise ValueError("the result holds no sequential trajectory (was sequential=False?)")
    for arm, points in trajectory.items():
        n = np.array([p["n"] for p in points], dtype=float)
        low = np.array([_number(p.get("low")) for p in points])
        high = np.array([_number(p.get("high")) for p in points])
        estimate = np.array([_number(p.get("estimate")) for p in points])
        defined = np.isfinite(low) & np.isfinite(high)
        (line,) = ax.plot(n, estimate, marker=".", label=f"{arm}: estimate")
        if defined.any():
            ax.fill_between(n, low, high, where=defined, alpha=0.3, color=line.get_color(),
                            label=f"{arm}: anytime-valid interval")  # fmt: skip
        if not defined.all():
            undefined_until = n[~defined].max()
            ax.axvspan(n.min(), undefined_until, color="grey", alpha=0.12,
                       label=f"{arm}: interval not defined yet (too few tail values)")  # fmt: skip
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xlabel("trials per arm")
    statistic = data.get("statistic", "mean")
    ax.set_ylabel(f"difference in {statistic} of {data.get('metric', 'metric')} (arm - baseline)")
    ax.set_title("Sequential test: estimate and anytime-valid interval per look")
    ax.legend()


def plot_trajectory(result: Any, path: str | Path) -> Path:
    """The sequential test's interval after every look, narrowing until a decision."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    draw_trajectory(ax, report_data(result))
    return _save(fig, path)


def plot_report(result: Any, folder: str | Path) -> list[Path]:
    """Every plot that the result has data for, into folder; returns the paths written.

    A plain compare() result (a Comparison) has no samples or looks: it gets the forest plot.
    """
    folder = Path(folder)
    data = report_data(result)
    written = []
    if data.get("samples"):
        written.append(plot_distributions(data, folder / "distributions.png"))
    if data.get("comparisons"):
        written.append(plot_forest(data, folder / "forest.png"))
    if any((data.get("trajectory") or {}).values()):
        written.append(plot_trajectory(data, folder / "trajectory.png"))
    return written
