"""Reports: JSON for machines, Markdown for people, from a result or its saved JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kpt.abtest._matrix import matrix_markdown
from kpt.abtest._monitor import quantile_note


def _as_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, Mapping):
        return dict(result)
    to_dict = getattr(result, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(
        f"cannot report a {type(result).__name__}; pass a Comparison (from compare()), an "
        "ExperimentResult, a DeviceBenchmark, or the dict one of them saved as JSON"
    )


def _is_comparison(data: Mapping[str, Any]) -> bool:
    return "effect" in data and "method" in data and "comparisons" not in data


def report_data(result: Any) -> dict[str, Any]:
    """Any result as the experiment-shaped dict reports and plots read.

    A single compare() result (or its saved JSON) becomes one comparison of arm b against a.
    """
    data = _as_dict(result)
    if not _is_comparison(data):
        return data
    return {
        "metric": data.get("metric", "value"),
        "statistic": data.get("metric", "value"),
        "baseline": "a",
        "comparisons": {"b": data},
        "summary": data.get("summary", ""),
    }


def to_json(result: Any, *, indent: int | None = 2) -> str:
    """The result as JSON text (non-finite numbers become null: JSON has no NaN)."""
    return json.dumps(_finite(_as_dict(result)), indent=indent)


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value: Any) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.2f}%"


def _arm_table(samples: Mapping[str, Mapping[str, list[float]]], metric: str) -> list[str]:
    rows = ["| arm | n | mean | sd | median | p95 | p99 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for arm, metrics in samples.items():
        values = np.asarray(metrics.get(metric, []), dtype=float)
        if values.size == 0:
            rows.append(f"| {arm} | 0 | | | | | |")
            continue
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        cells = [float(values.mean()), sd, float(p50), float(p95), float(p99)]
        rows.append(f"| {arm} | {values.size} | " + " | ".join(_fmt(c) for c in cells) + " |")
    return rows


def _comparison_table(comparisons: Mapping[str, Mapping[str, Any]], baseline: str) -> list[str]:
    rows = [
        f"| arm vs {baseline} | statistic | {baseline} | arm | difference | relative (CI) "
        "| p | decision |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for arm, c in comparisons.items():
        low, high = c.get("relative_ci") or (None, None)
        ci_low, ci_high = c.get("ci") or (None, None)
        interval = c.get("interval", "Welch t")
        rows.append(
            f"| {arm} | {c.get('metric')} ({c.get('method')}; {interval} interval) "
            f"| {_fmt(c.get('estimate_a'))} "
            f"| {_fmt(c.get('estimate_b'))} | {_fmt(c.get('effect'))} "
            f"[{_fmt(ci_low)}, {_fmt(ci_high)}] | {_pct(c.get('relative_effect'))} "
            f"[{_pct(low)}, {_pct(high)}] | {_fmt(c.get('p_value'), 3)} | {c.get('decision')} |"
        )
    return rows


def _anytime_table(anytime: Mapping[str, Mapping[str, Any]], baseline: str, statistic) -> list[str]:
    rows = [
        f"| arm vs {baseline} | statistic | difference | anytime-valid interval | level "
        "| looks | n per arm | decision |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for arm, look in anytime.items():
        low, high = look.get("interval") or (None, None)
        level = f"{100 * (1 - look.get('alpha', 0.05)):g}%"
        rows.append(
            f"| {arm} | {statistic} | {_fmt(look.get('estimate'))} | [{_fmt(low)}, {_fmt(high)}] "
            f"| {level} | {look.get('looks')} | {look.get('n')} | {look.get('decision')} |"
        )
    return rows


def to_markdown(result: Any, *, title: str = "A/B experiment") -> str:
    """Markdown: the verdict first, then per-arm statistics, comparisons, how it stopped."""
    data = report_data(result)
    if data.get("kind") == "regression-matrix":
        return matrix_markdown(data)
    if "devices" in data:
        return _device_markdown(data, title="Cross-device benchmark")
    if str(data.get("protocol", "")).startswith("kpt-abtest/"):
        return _distributed_markdown(data, title="Distributed evaluation")
    lines = [f"# {title}", ""]
    if data.get("summary"):
        lines += ["## Verdict", "", *[f"> {line}" for line in data["summary"].splitlines()], ""]
    metric = data.get("metric", "value")
    if data.get("samples"):
        lines += [f"## Arms ({metric})", "", *_arm_table(data["samples"], metric), ""]
    baseline = data.get("baseline", "a")
    if data.get("anytime"):
        lines += [
            "## Anytime-valid intervals (sequential test; valid after optional stopping)",
            "",
            *_anytime_table(data["anytime"], baseline, data.get("statistic", "mean")),
            "",
        ]
    if data.get("comparisons"):
        heading = "## Comparisons"
        if data.get("anytime"):
            heading = (
                "## Fixed-horizon comparisons (invalid after optional stopping; reference only)"
            )
        lines += [heading, "", *_comparison_table(data["comparisons"], baseline), ""]
    details = [
        ("schedule", data.get("schedule")),
        ("stopped by", data.get("stopped_by")),
        ("elapsed", f"{_fmt(data.get('elapsed_s'))} s" if "elapsed_s" in data else None),
    ]
    details = [(k, v) for k, v in details if v is not None]
    if details:
        lines += ["## Run", "", *[f"- {k}: {v}" for k, v in details], ""]
    for arm, points in (data.get("trajectory") or {}).items():
        if points:
            last = points[-1]
            lines.append(
                f"- sequential test for {arm}: {len(points)} looks, last at n = {last.get('n')}, "
                f"interval [{_fmt(last.get('low'))}, {_fmt(last.get('high'))}], "
                f"decision {last.get('decision')}"
            )
    return "\n".join(lines).rstrip() + "\n"


def _device_markdown(data: Mapping[str, Any], *, title: str) -> str:
    lines = [f"# {title}", "", f"Workload: {data.get('workload', 'n/a')}; "]
    lines[-1] += f"baseline device: {data.get('baseline')}; unit: seconds per step."
    if any(d.get("clock") == "simulated" for d in data["devices"].values()):
        lines[-1] += (" Devices marked [simulated] report the simulator's chip-profile time, "
                      "not a measurement.")  # fmt: skip
    lines += [
        "",
        "| device | n | mean s/step | speed vs baseline (CI) | cost per 1M steps (CI) |",
        "|---|---:|---:|---|---|",
    ]
    for name, d in data["devices"].items():
        speed = d.get("speedup")
        low, high = d.get("speedup_ci") or (None, None)
        cost = d.get("cost_per_million_steps")
        cost_text = "no price"
        if cost is not None:
            c_low, c_high = d.get("cost_ci") or (None, None)
            cost_text = f"{_fmt(cost)} [{_fmt(c_low)}, {_fmt(c_high)}]"
        simulated = d.get("clock") == "simulated"
        label = f"{name} [simulated]" if simulated else name
        speed_text = f"{_fmt(speed, 3)}x [{_fmt(low, 3)}, {_fmt(high, 3)}]"
        if speed is None or (isinstance(speed, float) and not math.isfinite(speed)):
            speed_text = "not ranked (simulated vs measured time)"
        mean_text = _fmt(d.get("mean_s")) + (" (simulated)" if simulated else "")
        lines.append(f"| {label} | {d.get('n')} | {mean_text} | {speed_text} | {cost_text} |")
    if data.get("summary"):
        lines += ["", *[f"> {line}" for line in data["summary"].splitlines()]]
    return "\n".join(lines) + "\n"


def _distributed_markdown(data: Mapping[str, Any], *, title: str) -> str:
    """An Aggregator snapshot: per-arm summary statistics and anytime-valid comparisons."""
    lines = [f"# {title}", "", f"Decision: **{data.get('decision')}** "]
    lines[-1] += f"(baseline {data.get('baseline')}, alpha {data.get('alpha')})."
    lines += [
        "",
        "| arm | n | mean | sd | p50 | p95 | p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, a in data.get("arms", {}).items():
        cells = [a.get(k) for k in ("mean", "sd", "p50", "p95", "p99")]
        lines.append(f"| {arm} | {a.get('n')} | " + " | ".join(_fmt(c) for c in cells) + " |")
    if data.get("arms"):
        lines += ["", quantile_note(data["arms"]) + "."]
    if data.get("comparisons"):
        lines += [
            "",
            "| arm | difference | relative | anytime-valid CI "
            "| Welch CI (invalid after optional stopping) | decision |",
            "|---|---:|---:|---|---|---|",
        ]
        for arm, c in data["comparisons"].items():
            low, high = c.get("ci") or (None, None)
            f_low, f_high = c.get("fixed_ci") or (None, None)
            lines.append(
                f"| {arm} | {_fmt(c.get('effect'))} | {_pct(c.get('relative'))} "
                f"| [{_fmt(low)}, {_fmt(high)}] | [{_fmt(f_low)}, {_fmt(f_high)}] "
                f"| {c.get('decision')} |"
            )
    workers = data.get("workers", {})
    lines += ["", f"Workers: {len(workers)}; summaries merged: {data.get('summaries_received')}."]
    return "\n".join(lines) + "\n"


def write_report(result: Any, path: str | Path) -> Path:
    """Write ``.json`` or ``.md`` (chosen by the file's suffix); returns the path written."""
    path = Path(path)
    if path.suffix == ".json":
        text = to_json(result)
    elif path.suffix in (".md", ".markdown"):
        text = to_markdown(result)
    else:
        raise ValueError(f"report path {str(path)!r} must end in .json or .md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a JSON report written by ``write_report`` (for Markdown or plots later)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"report {str(path)!r} does not exist") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"report {str(path)!r} is not valid JSON: {error}") from None
