"""Run the kpt.hal conformance kit on a GPU machine; write JUnit XML and a Markdown summary.

    python packages/kpt-hal/benchmarks/run_conformance_gpu.py OUT_DIR [--adapter nvidia]
        [--adapter-path FOLDER] [--venv DIR | --no-install]

Installs kpt-hal from this checkout and the adapter from its folder (``--adapter-path``: a fork
anywhere; default ``packages/kpt-adapter-<adapter>`` here) into a venv of its own (``--venv``,
default OUT_DIR/venv), never into the interpreter that runs this script. The venv sees that
interpreter's packages behind its own, so the machine's CUDA build of torch and its triton are
used, pinned: pip never replaces them. Then it runs
`pytest --pyargs kpt.hal.testing --kpt-adapter <adapter> --kpt-require-hardware` there and
writes OUT_DIR/conformance.xml, OUT_DIR/pytest.txt, OUT_DIR/doctor.txt and OUT_DIR/summary.md.
``--no-install`` runs with this interpreter and what it has installed.
Exit status: pytest's (0 when every test passed); 2 when it could not set up.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    shown = " ".join(arg if "\n" not in arg else "'...'" for arg in command)
    print("+", shown, flush=True)
    return subprocess.run(command, text=True, **kwargs)


class SetupError(Exception):
    """The run could not be prepared; the message says what to do."""


def _adapter_folder(adapter: str, path: Path | None) -> Path:
    folder = path if path is not None else ROOT / "packages" / f"kpt-adapter-{adapter}"
    if not (folder / "pyproject.toml").is_file():
        raise SetupError(
            f"adapter folder {folder} has no pyproject.toml: pass --adapter-path with your "
            f"fork's folder (it may live anywhere), or --adapter with a name under {ROOT}/packages"
        )
    return folder.resolve()


def _layered_venv(venv: Path) -> Path:
    """A venv that sees this interpreter's packages behind its own; its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True, check=True)  # fmt: skip
    own = Path(done.stdout.strip())
    base = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    # addsitedir, not a bare path: the base's own .pth files (editable installs) apply too.
    lines = [f"import site; site.addsitedir({str(path)!r})" for path in base]
    (own / "_kpt_conformance_base.pth").write_text("\n".join(lines) + "\n")
    return python


def _pins(python: Path, out: Path) -> Path:
    """A constraints file holding torch (and triton) at the versions already there."""
    probe = (
        "import importlib.metadata as m\n"
        "for name in ('torch', 'triton'):\n"
        "    try:\n"
        "        print(f'{name}=={m.version(name)}')\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
    )
    pins = _run([str(python), "-c", probe], capture_output=True, check=True).stdout.split()
    if not any(pin.startswith("torch==") for pin in pins):
        raise SetupError(
            f"torch is not installed for {sys.executable}: install your platform's build of "
            "torch first (the kit never downloads one), then run this script with that python"
        )
    path = out / "keep-installed.txt"
    path.write_text("\n".join(pins) + "\n")
    return path


def _install(python: Path, adapter_folder: Path, out: Path) -> None:
    """kpt-hal from this checkout, the adapter from its folder, and pytest, into the venv.

    With pip (this interpreter's, seen through the venv) dependencies are resolved and torch and
    triton are pinned at the versions already there. Without pip, uv installs the two packages
    alone (--no-deps: uv does not see the layered packages, so it must not resolve torch)."""
    packages = [str(ROOT / "packages" / "kpt-hal"), str(adapter_folder)]
    kit = ["pytest>=8", "pytest-timeout>=2.3"]  # pytest-timeout: named in kpt-hal's settings
    pins = _pins(python, out)
    if _run([str(python), "-m", "pip", "--version"], capture_output=True).returncode == 0:
        _run([str(python), "-m", "pip", "install", "-q", "-c", str(pins), *packages, *kit],
             check=True)  # fmt: skip
        return
    uv = shutil.which("uv")
    if uv is None:
        raise SetupError(
            f"neither pip nor uv for {sys.executable}: install one (python -m ensurepip), or "
            "install kpt-hal and the adapter yourself and pass --no-install"
        )
    _run([uv, "pip", "install", "-q", "--python", str(python), "--no-deps", *packages],
         check=True)  # fmt: skip
    has_kit = "import pytest, pytest_timeout"
    if _run([str(python), "-c", has_kit], capture_output=True).returncode != 0:
        _run([uv, "pip", "install", "-q", "--python", str(python), *kit], check=True)


def _environment(python: str) -> list[str]:
    probe = (
        "import torch\n"
        "print('torch', torch.__version__, 'cuda', torch.version.cuda)\n"
        "for i in range(torch.cuda.device_count()):\n"
        "    print('gpu', i, torch.cuda.get_device_name(i))\n"
        "try:\n"
        "    import triton; print('triton', triton.__version__)\n"
        "except ImportError:\n"
        "    print('triton not installed')\n"
    )
    done = _run([python, "-c", probe], capture_output=True)
    return [f"python {platform.python_version()} on {platform.node()}", *done.stdout.splitlines()]


def _cases(xml_path: Path) -> list[tuple[str, str, float, str]]:
    """(test, outcome, seconds, message) for every testcase in a JUnit XML file."""
    rows = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                message = next(iter((node.get("message") or "").splitlines()), "")[:160]
                break
        recorded = [f"{p.get('name')}={p.get('value')}" for p in case.iter("property")]
        message = "; ".join(part for part in [*recorded, message] if part)
        rows.append((case.get("name", "?"), outcome, float(case.get("time", 0)), message))
    return rows


def _summary(adapter: str, rows, environment: list[str], doctor: str, status: int) -> str:
    counts: dict[str, int] = {}
    for _, outcome, _, _ in rows:
        counts[outcome] = counts.get(outcome, 0) + 1
    verdict = "PASS" if status == 0 else f"FAIL (pytest exit {status})"
    lines = [
        f"# kpt.hal conformance: adapter `{adapter}` — {verdict}",
        "",
        ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no tests ran",
        "",
        "## Machine",
        "",
        *(f"- {line}" for line in environment),
        "",
        "## Tests",
        "",
        "| test | outcome | seconds | message |",
        "|---|---|---:|---|",
        *(f"| {n} | {o} | {t:.3f} | {m.replace('|', '/')} |" for n, o, t, m in rows),
        "",
        "## kpt doctor",
        "",
        "```",
        doctor.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for conformance.xml and summary.md")
    parser.add_argument("--adapter", default="nvidia", help="adapter to test (default nvidia)")
    parser.add_argument(
        "--adapter-path", type=Path, default=None,
        help="the adapter's folder, anywhere (default: packages/kpt-adapter-ADAPTER here)",
    )  # fmt: skip
    parser.add_argument(
        "--venv", type=Path, default=None,
        help="venv to install into and run from (default OUT_DIR/venv; reused when it exists)",
    )  # fmt: skip
    parser.add_argument(
        "--no-install", action="store_true",
        help="install nothing: run with this python and what it has installed",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out: Path = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    if not args.no_install:
        try:
            folder = _adapter_folder(args.adapter, args.adapter_path)
            venv_python = _layered_venv((args.venv or out / "venv").resolve())
            _install(venv_python, folder, out)
        except SetupError as error:
            print(f"run_conformance_gpu: {error}", file=sys.stderr)
            return 2
        except subprocess.CalledProcessError as error:
            print(f"run_conformance_gpu: setting up failed: {error}", file=sys.stderr)
            return 2
        python = str(venv_python)
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # native Triton on the GPU, not the interpreter
    doctor = _run([python, "-m", "kpt.hal._cli", "doctor"], capture_output=True, env=env)
    (out / "doctor.txt").write_text(doctor.stdout + doctor.stderr)
    xml_path = out / "conformance.xml"
    command = [
        python, "-m", "pytest", "--pyargs", "kpt.hal.testing",
        "--kpt-adapter", args.adapter, "--kpt-require-hardware",
        f"--junitxml={xml_path}", "-p", "no:cacheprovider", "-rA", "-v",
    ]  # fmt: skip
    tests = _run(command, capture_output=True, env=env, cwd=out)
    (out / "pytest.txt").write_text(tests.stdout + tests.stderr)
    print(tests.stdout[-4000:])
    rows = _cases(xml_path) if xml_path.exists() else []
    summary = _summary(args.adapter, rows, _environment(python), doctor.stdout, tests.returncode)
    (out / "summary.md").write_text(summary)
    print(f"wrote {xml_path} and {out / 'summary.md'}")
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
