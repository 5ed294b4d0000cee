"""kpt-abtest's command line for a newcomer: --version, plain help on every option, and a
report path it cannot write refused before any trial runs."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

import kpt.abtest as ab
from kpt.abtest._cli import build_parser, main


def _options(parser: argparse.ArgumentParser, where: str = "kpt-abtest"):
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
    assert capsys.readouterr().out.strip() == f"kpt-abtest {ab.__version__}"


def test_every_option_and_argument_has_help():
    missing = [
        f"{where} {action.option_strings or action.dest}"
        for where, action in _options(build_parser())
        if not action.help
    ]
    assert not missing, f"without help: {missing}"


def test_help_is_plain_text_without_rst_markup():
    text = build_parser().format_help()
    assert "``" not in text, text


def test_an_unsupported_report_is_refused_before_any_trial(tmp_path, capsys):
    marker = tmp_path / "ran"
    arm = {"command": [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"]}
    config = tmp_path / "experiment.json"
    config.write_text(json.dumps({"arms": {"a": arm, "b": arm}, "max_trials": 4}))
    code = main(["run", str(config), "--out", str(tmp_path / "report.html")])
    assert code == 2
    assert "report.html" in capsys.readouterr().err
    assert not marker.exists(), "trials ran before the report path was checked"
