"""docs/adapters.md followed literally: its shell blocks fork an adapter, a few hand edits point
the fork at a new runtime, and the conformance kit runs on the result.

The commands come from the guide itself (the block after each `<!-- ci:... -->` marker), so
the guide and this test cannot drift apart.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "adapters.md"
CONFORMANCE = ROOT / "packages" / "kpt-hal" / "benchmarks" / "run_conformance_gpu.py"
MAX_HAND_EDITED_LINES = 50


def _block(marker: str) -> str:
    text = GUIDE.read_text()
    match = re.search(rf"<!-- {re.escape(marker)} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    assert match, f"docs/adapters.md has no code block after <!-- {marker} -->"
    return match.group(1)


def _run_shell(commands: str, checkout: Path) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=checkout, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"the guide's commands failed:\n{commands}\n{done.stderr}"


def _tree(folder: Path) -> dict[str, list[str]]:
    return {
        str(p.relative_to(folder)): p.read_text().splitlines()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _changed_lines(before: dict[str, list[str]], after: dict[str, list[str]]) -> int:
    changed = 0
    for name in before.keys() | after.keys():
        diff = difflib.unified_diff(before.get(name, []), after.get(name, []), lineterm="", n=0)
        changed += sum(
            1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))
        )
    return changed


def _kit(fork: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest on the fork's tests, its src/ importable (as an install would make it)."""
    env = {**os.environ, "PYTHONPATH": str(fork / "src"), "TRITON_INTERPRET": "1"}
    env.pop("KPT_ADAPTERS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(fork / "tests"), "-p", "no:cacheprovider",
         "-q", "-rs", *args],
        cwd=fork, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def _checkout(tmp_path: Path, *folders: str) -> Path:
    checkout = tmp_path / "kpt"
    for folder in folders:
        shutil.copytree(
            ROOT / folder, checkout / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return checkout


def test_a_new_chip_from_the_template_passes_the_kit(tmp_path):
    checkout = _checkout(tmp_path, "templates/kpt-adapter-NAME")
    _run_shell(_block("ci:fork-new-chip"), checkout)
    fork = checkout / "packages" / "kpt-adapter-acme"
    renamed = _tree(fork)
    assert not any("NAME" in line or "Name" in line for lines in renamed.values() for line in lines)
    assert "src/kpt/adapters/acme/_runtime.py" in renamed

    # Pointed at "a new runtime": a chip with 2 GiB, a datasheet of its own, its vendor name.
    runtime = fork / "src/kpt/adapters/acme/_runtime.py"
    runtime.write_text(
        runtime.read_text().replace("MEMORY_BYTES = 4 << 30", "MEMORY_BYTES = 2 << 30")
    )
    adapter = fork / "src/kpt/adapters/acme/_adapter.py"
    adapter.write_text(
        adapter.read_text()
        .replace('vendor="acme"', 'vendor="Acme Silicon"')
        .replace(
            'PEAK_FLOPS = {"float32": 1e12, "bfloat16": 4e12}', 'PEAK_FLOPS = {"float32": 2e12}'
        )
    )
    assert _changed_lines(renamed, _tree(fork)) <= MAX_HAND_EDITED_LINES

    result = _kit(fork)
    assert result.returncode == 0, result.stdout[-4000:]
    passed = int(re.search(r"(\d+) passed", result.stdout).group(1))
    assert passed >= 11, result.stdout[-4000:]  # the device tests ran, on the new device type
    assert "failed" not in result.stdout


def test_a_fork_of_the_nvidia_adapter_follows_the_recipe(tmp_path):
    checkout = _checkout(tmp_path, "packages/kpt-adapter-nvidia")
    _run_shell(_block("ci:fork"), checkout)
    fork = checkout / "packages" / "kpt-adapter-acme"
    tree = _tree(fork)
    assert "tests/test_acme.py" in tree and "tests/test_nvidia.py" not in tree
    leftovers = [
        f"{name}: {line}"
        for name, lines in tree.items()
        for line in lines
        if re.search("nvidia", line, re.I) and "nvidia-ml-py" not in line
    ]
    assert not leftovers, leftovers
    pyproject = "\n".join(tree["pyproject.toml"])
    assert 'nvml = ["nvidia-ml-py>=12"]' in pyproject  # a real library's name is left alone
    assert 'name = "kpt-adapter-acme"' in pyproject
    assert 'acme = "kpt.adapters.acme:AcmeAdapter"' in pyproject

    # The guide's hand edits for a chip on a torch device type: the fork's own tests (its
    # library fakes) are the vendor's to rewrite; the standard suite runs without hardware.
    (fork / "tests" / "test_acme.py").unlink()
    result = _kit(fork)
    assert result.returncode == 0, result.stdout[-4000:]
    import torch

    if not torch.cuda.is_available():  # CI: no GPU, so the device tests skip, with the reason
        assert re.search(r"\b3 passed", result.stdout), result.stdout[-4000:]
        assert "no device 0" in result.stdout


@pytest.mark.parametrize("marker", ["ci:fork", "ci:fork-new-chip"])
def test_the_recipes_say_how_to_install_the_fork(marker):
    text = GUIDE.read_text()
    assert "uv pip install ./packages/kpt-adapter-acme" in text
    assert marker in text


def _conformance(out: Path, *args: str, timeout: float = 840) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KPT_ADAPTERS", "PYTHONPATH")}
    return subprocess.run(
        [sys.executable, str(CONFORMANCE), str(out), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


@pytest.mark.timeout(900)
def test_the_conformance_script_runs_a_fork_kept_anywhere_in_its_own_venv(tmp_path):
    checkout = _checkout(tmp_path, "templates/kpt-adapter-NAME")
    _run_shell(_block("ci:fork-new-chip"), checkout)
    elsewhere = tmp_path / "vendor" / "acme-adapter"  # not under any packages/ folder
    shutil.move(checkout / "packages" / "kpt-adapter-acme", elsewhere)

    out = tmp_path / "out"
    done = _conformance(out, "--adapter", "acme", "--adapter-path", str(elsewhere))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert "adapter `acme` — PASS" in summary
    assert re.search(r"\b11 passed\b", summary), summary[:400]
    assert (out / "venv" / "bin" / "python").exists()
    # Installed into its own venv only: the interpreter that ran the script has no acme.
    probe = "import importlib.util as u; print(u.find_spec('kpt.adapters.acme') is None)"
    mine = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert mine.stdout.strip() == "True"


def test_the_conformance_script_explains_a_missing_adapter_folder(tmp_path):
    done = _conformance(tmp_path / "out", "--adapter", "acme", timeout=120)
    assert done.returncode == 2
    assert "has no pyproject.toml: pass --adapter-path" in done.stderr
    assert not (tmp_path / "out" / "venv").exists()  # refused before creating anything
