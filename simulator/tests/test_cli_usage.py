"""kpt-sim's command line for a newcomer: --version, help on every option, JSON profiles, and
one-line errors (never a traceback) for a bad heartbeat, endpoint or executor option."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys

import pytest

import kpt.sim
from kpt.sim._cli import _parser, main


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kpt.sim", *args], capture_output=True, text=True, timeout=timeout
    )


def _options(parser: argparse.ArgumentParser, where: str = "kpt-sim"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{where} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield where, action


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"kpt-sim {kpt.sim.__version__}"


def test_every_option_and_argument_has_help():
    missing = [
        f"{where} {action.option_strings or action.dest}"
        for where, action in _options(_parser())
        if not action.help
    ]
    assert not missing, f"without help: {missing}"


def test_profiles_json_has_a_row_per_shipped_profile(capsys):
    assert main(["profiles", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["profile"] for row in rows] == kpt.sim.profiles()
    assert all(row["memory_total"] > 0 for row in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heartbeat", "-1"], "argument --heartbeat: must be a finite number of seconds > 0"),
        (["--heartbeat", "nan"], "argument --heartbeat: must be a finite number of seconds > 0"),
        (["--heartbeat", "abc"], "argument --heartbeat: 'abc' is not a number of seconds"),
        (["--endpoint", "unix://daemon.sock"], "use unix:///absolute/path.sock"),
        (["--endpoint", "localhost:5555"], "--endpoint: endpoint 'localhost:5555' is invalid"),
        (["--max-connections", "0"], "argument --max-connections:"),
        (["--trace-events", "-5"], "argument --trace-events:"),
    ],
)
def test_bad_serve_arguments_are_one_line_errors(args, message):
    result = _cli("serve", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_executor_refusing_an_option_value_is_a_one_line_error():
    executors = {ep.name for ep in importlib.metadata.entry_points(group="kpt.sim.executors")}
    if "torch" not in executors:
        pytest.skip("the torch executor (kpt-adapter-sim) is not installed")
    result = _cli("serve", "--executor", "torch", "--executor-option", "threads=abc", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "executor 'torch' refused {'threads': 'abc'}" in result.stderr
    assert "Traceback" not in result.stderr
