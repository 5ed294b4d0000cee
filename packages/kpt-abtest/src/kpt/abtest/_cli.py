"""``kpt-abtest``: compare two sample files, plan a sample size, run an experiment, monitor one."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kpt.abtest._version import __version__


class CliError(Exception):
    """A mistake in the command line or its files: printed without a traceback, exit code 2."""


_NUMBER_SPLIT = re.compile(r"[,\s;]+")


def read_samples(path: str | Path) -> np.ndarray:
    """Numbers from a text file, split by newlines, spaces, commas or semicolons; '#' comments."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CliError(f"sample file {str(path)!r} does not exist") from None
    except (IsADirectoryError, UnicodeDecodeError) as error:
        raise CliError(f"sample file {str(path)!r} is not text of numbers: {error}") from None
    values: list[float] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        for token in _NUMBER_SPLIT.split(line.split("#", 1)[0].strip()):
            if not token:
                continue
            try:
                value = float(token)
            except ValueError:
                raise CliError(
                    f"{path}:{line_no}: {token!r} is not a number; sample files hold one number "
                    "per line (or separated by spaces/commas), '#' starts a comment"
                ) from None
            if not math.isfinite(value):
                raise CliError(f"{path}:{line_no}: {token!r} is not finite; remove it")
            values.append(value)
    if not values:
        raise CliError(f"sample file {str(path)!r} holds no numbers")
    return np.asarray(values)


def _metric(text: str) -> str | float:
    try:
        q = float(text)
    except ValueError:
        return text
    if not 0 < q < 1:
        raise argparse.ArgumentTypeError(f"quantile metric must be in (0, 1), got {text}")
    return q


def _compare_inputs(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """(a, b, description): two files of numbers, or a CSV column (per file, or split by group)."""
    from kpt.abtest._tables import csv_column, read_csv_table, split_groups

    if args.column is None:
        if args.group is not None or args.b is None:
            raise CliError("give two files of numbers (A B), or a CSV file with --column "
                           "VALUES --group VARIANT (one file, two variants)")  # fmt: skip
        return read_samples(args.a), read_samples(args.b), f"a = {args.a}, b = {args.b}"
    if args.group is None:
        if args.b is None:
            raise CliError(
                f"--column {args.column} with one CSV file needs --group NAME (the column that "
                "says which variant each row is), or give two files"
            )
        a = csv_column(read_csv_table(args.a), args.column, f"{args.a}: ")
        b = csv_column(read_csv_table(args.b), args.column, f"{args.b}: ")
        return a, b, f"a = {args.a}, b = {args.b} (column {args.column})"
    if args.b is not None:
        raise CliError("--group splits ONE CSV file into two variants; give one file")
    (name_a, a), (name_b, b) = split_groups(
        read_csv_table(args.a), args.column, args.group,
        baseline=args.baseline_group, variant=args.variant_group,
    )  # fmt: skip
    return a, b, f"a = {args.group} {name_a}, b = {args.group} {name_b} (column {args.column})"


def _cmd_compare(args: argparse.Namespace) -> int:
    from kpt.abtest._compare import compare

    a, b, described = _compare_inputs(args)
    result = compare(
        a,
        b,
        metric=args.metric,
        alpha=args.alpha,
        paired=args.paired,
        method=args.method,
        higher_is_better=args.higher_is_better,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(described)
        print(result.summary())
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from kpt.abtest._power import sample_size

    n = sample_size(args.effect, args.sd, alpha=args.alpha, power=args.power)
    if args.json:
        print(json.dumps({"n_per_arm": _plain(n), "effect": args.effect, "sd": args.sd}))
    else:
        print(
            f"To detect a difference of {args.effect:g} (sd {args.sd:g}) with power "
            f"{args.power:g} at alpha {args.alpha:g}: {_plain(n)} samples per arm."
        )
    return 0


def _plain(value: Any) -> Any:
    if hasattr(value, "n_per_arm"):
        return value.n_per_arm
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_config(path: str | Path) -> dict[str, Any]:
    """An experiment file, JSON or TOML (by suffix), with its 'arms' table checked."""
    config = _load_any_config(path)
    if not isinstance(config.get("arms"), dict):
        raise CliError(
            f"config {str(path)!r} needs an 'arms' table mapping names to "
            '{"command": [...]} or {"callable": "module:function", "config": {...}} '
            '(or a "task" for a distributed evaluation)'
        )
    return config


def _load_any_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CliError(f"config {str(path)!r} does not exist") from None
    try:
        config = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise CliError(f"config {str(path)!r} cannot be parsed: {error}") from None
    if not isinstance(config, dict):
        raise CliError(f"config {str(path)!r} must hold a table (a JSON object)")
    return config


def resolve_callable(spec: str):
    """'package.module:function' -> the function (imported, never unpickled)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CliError(f"callable {spec!r} must look like 'package.module:function'")
    if "" not in sys.path and os.getcwd() not in sys.path:
        # As `python -m` does: a module in the current folder is found (a console script's
        # sys.path starts at its own bin/ folder instead).
        sys.path.insert(0, os.getcwd())
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise CliError(f"callable {spec!r} cannot be loaded: {error}") from None
    if not callable(target):
        raise CliError(f"{spec!r} is a {type(target).__name__}, not a function")
    return target


def _command_arm(name: str, argv: Any, parse_stdout: bool):
    if isinstance(argv, str):
        argv = argv.split()
    if not isinstance(argv, list) or not argv:
        raise CliError(f"arm {name!r}: 'command' must be a non-empty list of arguments")

    def trial():
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise CliError(
                f"arm {name!r}: {argv[0]} exited with {done.returncode}: {done.stderr[-500:]}"
            )
        if not parse_stdout:
            return wall
        last = (done.stdout.strip().splitlines() or [""])[-1]
        try:
            return json.loads(last)
        except json.JSONDecodeError:
            raise CliError(
                f"arm {name!r}: last line of output {last!r} is not a number or JSON object"
            ) from None

    return trial


def build_experiment(config: dict[str, Any]):
    """An Experiment from a config dict (the file format of ``kpt-abtest run``)."""
    from kpt.abtest import Experiment

    arms = {}
    for name, spec in config["arms"].items():
        if not isinstance(spec, dict) or ("command" in spec) == ("callable" in spec):
            raise CliError(f"arm {name!r} needs exactly one of 'command' or 'callable'")
        if "command" in spec:
            arms[name] = _command_arm(name, spec["command"], bool(spec.get("stdout_metric")))
        else:
            function, kwargs = resolve_callable(spec["callable"]), spec.get("config", {})
            arms[name] = lambda function=function, kwargs=kwargs: function(**kwargs)
    options = {k: v for k, v in config.items() if k != "arms"}
    known = {
        "metric",
        "statistic",
        "higher_is_better",
        "baseline",
        "warmup",
        "schedule",
        "max_trials",
        "min_trials",
        "sequential",
        "time_budget_s",
        "alpha",
        "seed",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise CliError(f"unknown config keys {unknown}; known: {', '.join(sorted(known))}")
    try:
        return Experiment(arms, **options)
    except ValueError as error:
        raise CliError(f"config: {error}") from None


_DISTRIBUTED_KEYS = {
    "task", "workers", "options", "baseline", "alpha", "higher_is_better", "timeout", "endpoint",
    "flush_every", "flush_interval_s", "executor", "ray_address", "curve",
}  # fmt: skip


def run_distributed(config: dict[str, Any]) -> dict[str, Any]:
    """Config ``{"task": "module:function", "workers": N, ...}``: evaluate over worker processes,
    or Ray tasks with ``"executor": "ray"`` (and ``"ray_address"`` for a cluster)."""
    from kpt.abtest._distributed import evaluate_distributed

    unknown = sorted(set(config) - _DISTRIBUTED_KEYS)
    if unknown:
        raise CliError(
            f"unknown keys {unknown} in a distributed config; known: {sorted(_DISTRIBUTED_KEYS)}"
        )
    options = {k: config[k] for k in _DISTRIBUTED_KEYS - {"task", "workers"} if k in config}
    return evaluate_distributed(
        config["task"],
        int(config.get("workers", 2)),
        on_start=lambda endpoint: print(
            f"aggregator at {endpoint}; watch it with: kpt-abtest monitor {endpoint}", flush=True
        ),
        **options,
    )


# The suffixes write_report() accepts; checked before a run, which may take hours.
REPORT_SUFFIXES = (".json", ".md", ".markdown")
ALPHA_HELP = "false-positive rate of the test, e.g. 0.05 (default 0.05)"


def _check_report_paths(paths: list[str]) -> None:
    for path in paths:
        if Path(path).suffix not in REPORT_SUFFIXES:
            raise CliError(
                f"--out {path!r}: reports are written as .json or .md (by the suffix); "
                "nothing was run"
            )


def _cmd_run(args: argparse.Namespace) -> int:
    from kpt.abtest._report import to_markdown, write_report

    _check_report_paths(args.out or [])
    config = _load_any_config(args.config)
    distributed = "task" in config
    if distributed and args.plots:
        raise CliError("--plots needs per-trial samples; a distributed run keeps only summaries")
    result = (
        run_distributed(config) if distributed else build_experiment(load_config(args.config)).run()
    )
    print(to_markdown(result))
    for path in args.out or []:
        print(f"wrote {write_report(result, path)}")
    if args.plots:
        from kpt.abtest._plots import plot_report

        for path in plot_report(result, args.plots):
            print(f"wrote {path}")
    return 0


def _csv_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def _batch_sizes(text: str) -> list[int]:
    try:
        return [int(item) for item in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"batch sizes must be whole numbers, got {text!r}"
        ) from None


def _matrix_timer(spec: str):
    from kpt.abtest._bench import device_timer, wall_timer

    return {"device": device_timer, "wall": wall_timer}.get(spec) or resolve_callable(spec)


def _cmd_matrix(args: argparse.Namespace) -> int:
    """Exit 0: no regression (or no baseline asked); 1: a cell regressed; 2: a usage error."""
    from kpt.abtest._baselines import BaselineStore
    from kpt.abtest._matrix import benchmark_matrix, compare_to_baseline
    from kpt.abtest._report import to_markdown, write_report

    _check_report_paths(args.out or [])
    if args.out and not args.baseline:
        raise CliError("--out writes the regression report: give --baseline NAME too")
    store = BaselineStore(args.baseline_dir)
    old = store.load(args.baseline) if args.baseline else None  # a typo fails before any run
    if args.save_baseline:
        store.path(args.save_baseline)  # the name is checked before any run as well
    result = benchmark_matrix(
        resolve_callable(args.workload), args.devices, args.dtypes, args.batch_sizes,
        trials=args.trials, warmup=args.warmup, timer=_matrix_timer(args.timer),
    )  # fmt: skip
    code = 0
    if old is None:
        print(result.summary())
    else:
        report = compare_to_baseline(
            result.cells, old, name=args.baseline, alpha=args.alpha, noise=args.noise
        )
        print(json.dumps(report.to_dict(), indent=2) if args.json else to_markdown(report))
        for path in args.out or []:
            print(f"wrote {write_report(report, path)}")
        code = 1 if report.failed else 0
    if args.save_baseline:
        path = store.save(args.save_baseline, result.cells, workload=args.workload)
        print(f"saved baseline {args.save_baseline!r} to {path}")
    return code


def _cmd_monitor(args: argparse.Namespace) -> int:
    from kpt.abtest._monitor import monitor

    return monitor(args.endpoint, interval=args.interval, once=args.once, as_json=args.json)


def _cmd_worker(args: argparse.Namespace) -> int:
    from kpt.abtest._distributed import run_worker
    from kpt.abtest._executors import curve_from_environment

    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as error:
        raise CliError(f"--options must be a JSON object: {error}") from None
    if not isinstance(options, dict):
        raise CliError(f"--options must be a JSON object, got {args.options!r}")
    run_worker(
        args.endpoint,
        args.task,
        args.shard,
        args.shards,
        worker_id=args.worker_id,
        options=options,
        flush_every=args.flush_every,
        flush_interval_s=args.flush_interval or None,
        **curve_from_environment(),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpt-abtest",
        description="kpt-abtest: compare two sample files, plan a sample size, run an "
        "experiment, monitor one.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "compare", help="compare two files of samples (b against a), or two variants in one CSV"
    )
    p.add_argument("a", help="text file of numbers for arm a (the baseline), or a CSV file")
    p.add_argument("b", nargs="?", help="text file of numbers for arm b (omit with --group)")
    p.add_argument("--column", help="CSV column holding the values (the files are CSV)")
    p.add_argument("--group", help="CSV column naming each row's variant: one file, two variants")
    p.add_argument("--baseline-group", help="the --group value that is arm a (default: first seen)")
    p.add_argument("--variant-group", help="the --group value that is arm b (default: the other)")
    p.add_argument(
        "--method", default="auto",
        help="welch|permutation|bootstrap|bootstrap_percentile|mann_whitney|order_statistic "
        "(default auto); each reports its own interval",
    )  # fmt: skip
    p.add_argument("--metric", type=_metric, default="mean", help="mean|median|p95|p99|0.9|...")
    p.add_argument("--alpha", type=float, default=0.05, help=ALPHA_HELP)
    p.add_argument("--paired", action="store_true", help="line i of a and b are one unit")
    p.add_argument("--higher-is-better", action="store_true", help="default: lower is better")
    p.add_argument("--json", action="store_true", help="print JSON instead of a sentence")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("plan", help="samples per arm to detect an effect")
    p.add_argument("--effect", type=float, required=True, help="smallest difference that matters")
    p.add_argument("--sd", type=float, required=True, help="standard deviation of one sample")
    p.add_argument("--alpha", type=float, default=0.05, help=ALPHA_HELP)
    p.add_argument(
        "--power", type=float, default=0.8, help="chance of detecting the effect (default 0.8)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a sentence")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("run", help="run the experiment described in a JSON or TOML file")
    p.add_argument("config", help="experiment file (see the README for its keys)")
    p.add_argument(
        "--out", action="append", metavar="PATH",
        help="write a report: PATH ending in .json or .md (repeatable); checked before any trial",
    )  # fmt: skip
    p.add_argument("--plots", help="folder for distribution, forest and trajectory plots")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "matrix",
        help="benchmark devices x dtypes x batch sizes; with --baseline, a regression verdict "
        "per cell and exit code 1 if any cell regressed (a CI gate)",
    )
    p.add_argument(
        "workload", help="module:function(device, dtype, batch_size) returning a step callable"
    )
    p.add_argument("--devices", type=_csv_list, default=["cpu"], help="e.g. cpu,kpt_sim:0,cuda:0")
    p.add_argument("--dtypes", type=_csv_list, default=["float32"], help="e.g. float32,bfloat16")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[1], help="e.g. 1,8,32")
    p.add_argument("--trials", type=int, default=20, help="timed steps per cell (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per cell first")
    p.add_argument(
        "--timer", default="device",
        help="device (device events; kpt_sim times are simulated), wall, or module:function",
    )  # fmt: skip
    p.add_argument("--baseline", metavar="NAME", help="compare every cell with saved baseline NAME")
    p.add_argument("--save-baseline", metavar="NAME", help="save this run's times as NAME")
    p.add_argument(
        "--baseline-dir", default=".kpt-abtest/baselines",
        help="folder of saved baselines (default .kpt-abtest/baselines)",
    )  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.05, help=ALPHA_HELP + "; Holm over cells")
    p.add_argument(
        "--noise", type=float, default=0.02,
        help="relative band a change must leave to count, as criterion (default 0.02 = 2%%)",
    )  # fmt: skip
    p.add_argument("--out", action="append", metavar="PATH", help="write the report (.json/.md)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_matrix)

    p = sub.add_parser("monitor", help="live view of a distributed evaluation's aggregator")
    p.add_argument("endpoint", help="aggregator endpoint, e.g. tcp://127.0.0.1:5555")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--once", action="store_true", help="print one view and exit")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser("worker", help="(internal) evaluate one shard and stream summaries")
    p.add_argument("endpoint", help="the aggregator's endpoint")
    p.add_argument("--task", required=True, help="module:function(shard, shards, reporter)")
    p.add_argument("--shard", type=int, required=True, help="this worker's shard, 0-based")
    p.add_argument("--shards", type=int, required=True, help="how many shards in all")
    p.add_argument("--worker-id", default=None, help="name in the aggregator's status")
    p.add_argument("--options", default="{}", help="JSON object of keyword arguments for the task")
    p.add_argument("--flush-every", type=int, default=1000, help="values per summary sent")
    p.add_argument(
        "--flush-interval", type=float, default=1.0,
        help="also send what is pending every this many seconds (0: by count only)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ValueError, ImportError, RuntimeError) as error:
        print(f"kpt-abtest {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
