"""The `kpt-hal` / `kpt` command line: fast help, --version, help on every option, and a
KPT_ADAPTERS typo that is said out loud instead of passing as "no accelerator here"."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

import kpt.hal as hal
from kpt._hal_command import build_parser
from kpt.hal._cli import main
from kpt.hal._discovery import AllowListWarning


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["doctor", "--help"], ["nosuch"]])
def test_help_version_and_usage_errors_do_not_import_torch(argv):
    done = _fresh(f"""
        import sys
        from kpt._hal_command import main
        try:
            main({argv!r})
        except SystemExit as exit:
            code = exit.code
        heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("kpt.hal"))
        print("IMPORTED", heavy, "EXIT", code)
    """)
    assert done.returncode == 0, done.stderr
    assert "IMPORTED [] EXIT" in done.stdout, done.stdout


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser(prog="kpt-hal").parse_args(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"kpt-hal (kpt-hal) {hal.__version__}"


def test_kpt_hal_and_kpt_are_the_same_console_script():
    scripts = {
        ep.name: ep.value
        for ep in importlib.metadata.entry_points(group="console_scripts")
        if ep.dist is not None and ep.dist.name == "kpt-hal"
    }
    assert scripts.get("kpt-hal") == "kpt._hal_command:main"
    assert scripts.get("kpt") == scripts.get("kpt-hal")


def _options(parser: argparse.ArgumentParser, where: str = "kpt-hal"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{where} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield where, action


def test_every_option_has_help():
    missing = [
        f"{where} {action.option_strings or action.dest}"
        for where, action in _options(build_parser(prog="kpt-hal"))
        if not action.help
    ]
    assert not missing, f"options without help: {missing}"


def test_a_misspelled_adapter_makes_kpt_devices_fail_and_say_why(
    monkeypatch, empty_registry, fake_adapter, capsys
):
    monkeypatch.setenv(hal.ALLOW_LIST_ENV, "gpu,typo")
    empty_registry.register(fake_adapter("gpu", count=1))
    assert main(["devices"], registry=empty_registry) == 1
    captured = capsys.readouterr()
    assert "cuda:0" in captured.out  # what was found is still listed
    assert "KPT_ADAPTERS: typo not found: misspelled or not installed" in captured.err
    assert captured.err.count("typo not found") == 1  # once, not again as a Python warning


def test_kpt_devices_exits_0_when_every_allowed_adapter_exists(
    monkeypatch, empty_registry, fake_adapter, capsys
):
    monkeypatch.setenv(hal.ALLOW_LIST_ENV, "gpu")
    empty_registry.register(fake_adapter("gpu", count=1))
    assert main(["devices", "--json"], registry=empty_registry) == 0
    assert capsys.readouterr().err == ""


def test_select_warns_when_kpt_adapters_names_a_missing_adapter(monkeypatch):
    monkeypatch.setenv(hal.ALLOW_LIST_ENV, "typo")
    registry = hal.Registry(entry_points=[])
    with pytest.warns(AllowListWarning, match="typo not found: misspelled or not installed"):
        picked = registry.select()
    assert picked.name == "cpu:0"  # it still works, but no longer silently
