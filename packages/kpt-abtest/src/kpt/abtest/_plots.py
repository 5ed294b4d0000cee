"""Plots (matplotlib, Agg backend): distributions, interval forest, sequential trajectory.

Each function takes an ExperimentResult (or its JSON dict) and a file path, and returns the path.
matplotlib is the optional extra ``plots``: ``pip install 'kpt-abtest[plots]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kpt.abtest._report import _as_dict


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


def plot_distributions(result: Any, path: str | Path) -> Path:
    """One histogram per arm of the primary metric, on shared bins, medians marked."""
    plt = _pyplot()
    data = _as_dict(result)
    metric = data.get("metric", "value")
    samples = {arm: np.asarray(m.get(metric, []), float) for arm, m in data["samples"].items()}
    everything = np.concatenate([v for v in samples.values() if v.size] or [np.zeros(1)])
    bins = np.histogram_bin_edges(everything, bins=min(50, max(10, everything.size // 10)))
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, values in samples.items():
        if values.size:
            (line,) = ax.plot([], [])
            color = line.get_color()
            ax.hist(values, bins=bins, alpha=0.45, label=f"{arm} (n={values.size})", color=color)
            ax.axvline(np.median(values), color=color, linestyle="--", linewidth=1)
    ax.set_xlabel(metric)
    ax.set_ylabel("trials")
    ax.set_title("Distribution per arm (dashed: median)")
    ax.legend()
    return _save(fig, path)


def plot_forest(result: Any, path: str | Path) -> Path:
    """Relative effect of every challenger against the baseline, with its interval."""
    plt = _pyplot()
    data = _as_dict(result)
    comparisons = data.get("comparisons", {})
    if not comparisons:
        raise ValueError("the result holds no comparisons to plot")
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * len(comparisons)))
    for row, c in enumerate(comparisons.values()):
        low, high = c.get("relative_ci") or (np.nan, np.nan)
        estimate = c.get("relative_effect", np.nan)
        decided = c.get("decision") not in (None, "no_difference")
        ax.plot([100 * low, 100 * high], [row, row], color="C1" if decided else "C0", lw=2)
        ax.plot([100 * estimate], [row], "o", color="C1" if decided else "C0")
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(comparisons)), list(comparisons))
    ax.set_xlabel(f"relative difference vs {data.get('baseline', 'baseline')} (%)")
    ax.set_title("Effects with intervals (orange: significant)")
    return _save(fig, path)


def plot_trajectory(result: Any, path: str | Path) -> Path:
    """The sequential test's interval after every look, narrowing until a decision."""
    plt = _pyplot()
    data = _as_dict(result)
    trajectory = {arm: pts for arm, pts in (data.get("trajectory") or {}).items() if pts}
    if not trajectory:
        raise ValueError("the result holds no sequential trajectory (was sequential=False?)")
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, points in trajectory.items():
        n = [p["n"] for p in points]
        low = [p.get("low", np.nan) for p in points]
        high = [p.get("high", np.nan) for p in points]
        ax.fill_between(n, low, high, alpha=0.3, label=f"{arm}: interval")
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xlabel("trials per arm")
    ax.set_ylabel(f"difference in {data.get('metric', 'metric')} (arm - baseline)")
    ax.set_title("Sequential test: anytime-valid interval per look")
    ax.legend()
    return _save(fig, path)


def plot_report(result: Any, folder: str | Path) -> list[Path]:
    """Every plot that the result has data for, into folder; returns the paths written."""
    folder = Path(folder)
    data = _as_dict(result)
    written = [plot_distributions(data, folder / "distributions.png")]
    if data.get("comparisons"):
        written.append(plot_forest(data, folder / "forest.png"))
    if any(data.get("trajectory", {}).values()):
        written.append(plot_trajectory(data, folder / "trajectory.png"))
    return written
