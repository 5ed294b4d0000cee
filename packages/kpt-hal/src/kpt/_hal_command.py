"""The `kpt-hal` command (also installed as `kpt`): its arguments, and the entry point.

It lives outside the kpt.hal package on purpose, as the pytest plugin does: importing anything
under kpt.hal imports torch (1-2 s), and `--help`, `--version` or a mistyped option should
answer at once. torch loads only once a command is parsed and runs (kpt.hal._cli).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path

NAMES = ("kpt-hal", "kpt")  # `kpt` is also an unrelated Kubernetes tool: `kpt-hal` never clashes
_VERSION_FILE = Path(__file__).parent / "hal" / "_version.py"


def version() -> str:
    """kpt-hal's version, read from its one version file without importing kpt.hal."""
    for node in ast.parse(_VERSION_FILE.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise RuntimeError(f"{_VERSION_FILE} sets no __version__")


def _prog() -> str:
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return invoked if invoked in NAMES else "kpt-hal"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or _prog(),
        description="kpt hardware abstraction: which devices are here, and why each adapter is "
        "or is not used. The same tool is installed as `kpt-hal` and `kpt`.",
        epilog="Environment: KPT_ADAPTERS=name,name limits discovery to those adapters (the CPU "
        "is always there); a name that is not installed is an error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (kpt-hal) {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("devices", "list every usable device; exit 1 when KPT_ADAPTERS names a missing adapter"),
        ("doctor", "explain every adapter: loaded, rejected (why), no hardware, conflicts"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
    text = "serve every device's health, memory and utilization in Prometheus format"
    metrics = commands.add_parser("metrics", help=text, description=text)
    metrics.add_argument("--port", type=int, required=True, help="TCP port (0: any free one)")
    metrics.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `kpt-hal` / `kpt`: parse without torch, then run the command."""
    args = build_parser().parse_args(argv)
    from kpt.hal._cli import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
