"""Every kpt console script answers --version with its distribution's version, and --help
with help on every option (no option left as a bare name)."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess

import pytest

SCRIPTS = sorted(
    (ep.name, ep.dist.name, ep.dist.version)
    for ep in importlib.metadata.entry_points(group="console_scripts")
    if ep.dist is not None and ep.dist.name.startswith("kpt-")
)


def test_the_kpt_hal_command_is_installed_under_both_names():
    names = {name for name, dist, _ in SCRIPTS if dist == "kpt-hal"}
    assert {"kpt", "kpt-hal"} <= names


@pytest.mark.parametrize(("script", "dist", "version"), SCRIPTS)
def test_version(script, dist, version):
    path = shutil.which(script)
    assert path, f"console script {script} ({dist}) is not on PATH"
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == script and done.stdout.split()[-1] == version, done.stdout


# Their own tests walk these parsers in-process (faster than a process per subcommand).
WALKED_IN_PACKAGE_TESTS = {"kpt-hal", "kpt-sim", "kpt-abtest"}
# Known gaps, kept visible rather than skipped: xfail until their owners explain every option.
UNEXPLAINED: dict[str, str] = {}  # distribution -> why its options are not all explained yet


@pytest.mark.parametrize(
    ("script", "dist"),
    [
        pytest.param(
            script,
            dist,
            marks=[pytest.mark.xfail(reason=UNEXPLAINED[dist])] if dist in UNEXPLAINED else [],
        )
        for script, dist, _ in SCRIPTS
        if dist not in WALKED_IN_PACKAGE_TESTS
    ],
)
def test_every_option_in_help_is_explained(script, dist):
    path = shutil.which(script)
    top = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120).stdout
    commands = re.findall(r"^    (\w[\w-]*)\s", top, flags=re.M)
    bare = []
    for command in [None, *commands]:
        argv = [path, command, "--help"] if command else [path, "--help"]
        text = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
        # argparse prints "  --opt VALUE    help text"; an option line with nothing after
        # its metavar, followed by another option line, has no help.
        lines = text.splitlines()
        for line, following in zip(lines, [*lines[1:], ""]):
            option = line.startswith("  ") and not line.startswith("   ")
            explained = re.search(r"\S\s{2,}\S", line[2:]) or following.startswith("    ")
            if option and not explained:
                bare.append(f"{script} {command or ''}: {line.strip()}")
    assert not bare, "options without help:\n" + "\n".join(bare)
