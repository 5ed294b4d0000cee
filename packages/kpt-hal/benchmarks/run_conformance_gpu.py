"""Run the kpt.hal conformance kit on a GPU machine; write JUnit XML and a Markdown summary.

    python packages/kpt-hal/benchmarks/run_conformance_gpu.py OUT_DIR [--adapter nvidia]

Installs kpt-hal and kpt-adapter-<adapter> from this checkout (editable, --no-deps: the
machine's own CUDA build of torch and its triton are kept), runs
`pytest --pyargs kpt.hal.testing --kpt-adapter <adapter> --kpt-require-hardware`, and writes
OUT_DIR/conformance.xml, OUT_DIR/pytest.txt, OUT_DIR/doctor.txt and OUT_DIR/summary.md.
Exit status: pytest's (0 when every test passed).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    shown = " ".join(arg if "\n" not in arg else "'...'" for arg in command)
    print("+", shown, flush=True)
    return subprocess.run(command, text=True, **kwargs)


def _install(adapter: str) -> None:
    packages = [ROOT / "packages" / "kpt-hal", ROOT / "packages" / f"kpt-adapter-{adapter}"]
    missing = [str(p) for p in packages if not p.is_dir()]
    if missing:
        sys.exit(f"no package folder {', '.join(missing)}; is --adapter {adapter!r} right?")
    editable = [arg for p in packages for arg in ("-e", str(p))]
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *editable], check=True)
    # the kit needs pytest; pytest-timeout is named in kpt-hal's pytest settings
    _run([sys.executable, "-m", "pip", "install", "-q", "pytest>=8", "pytest-timeout>=2.3"])


def _environment() -> list[str]:
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
    done = _run([sys.executable, "-c", probe], capture_output=True)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder for conformance.xml and summary.md")
    parser.add_argument("--adapter", default="nvidia", help="adapter to test (default nvidia)")
    parser.add_argument("--no-install", action="store_true", help="use what is installed")
    args = parser.parse_args()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_install:
        _install(args.adapter)
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # native Triton on the GPU, not the interpreter
    doctor = _run([sys.executable, "-m", "kpt.hal._cli", "doctor"], capture_output=True, env=env)
    (out / "doctor.txt").write_text(doctor.stdout + doctor.stderr)
    xml_path = out / "conformance.xml"
    command = [
        sys.executable, "-m", "pytest", "--pyargs", "kpt.hal.testing",
        "--kpt-adapter", args.adapter, "--kpt-require-hardware",
        f"--junitxml={xml_path}", "-p", "no:cacheprovider", "-rA", "-v",
    ]  # fmt: skip
    tests = _run(command, capture_output=True, env=env, cwd=out)
    (out / "pytest.txt").write_text(tests.stdout + tests.stderr)
    print(tests.stdout[-4000:])
    rows = _cases(xml_path) if xml_path.exists() else []
    summary = _summary(args.adapter, rows, _environment(), doctor.stdout, tests.returncode)
    (out / "summary.md").write_text(summary)
    print(f"wrote {xml_path} and {out / 'summary.md'}")
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main())
