"""kpt-collectives plan | bench: the mixed-group plan, and an nccl-tests-style table."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from kpt.collectives._bench import format_rows, run_bench
from kpt.collectives._plan import format_plans
from kpt.collectives._version import __version__

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30}  # fmt: skip


def parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if unit is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 4096, 64KiB, 256MiB")
    return int(match.group(1)) * unit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kpt-collectives", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="how an all-reduce over a mixed group would run, and its cost")
    p.add_argument("--devices", required=True,
                   help="per rank: a chip profile (h100-sxm, mi300x, ...) or cpu")  # fmt: skip
    p.add_argument("--bytes", type=parse_bytes, default=parse_bytes("256MiB"),
                   help="all-reduce size per rank, e.g. 64MiB (default 256MiB)")  # fmt: skip
    b = sub.add_parser("bench", help="time collectives on real rank processes (nccl-tests style)")
    b.add_argument("--backend", default="kpt", help="kpt (default) or any torch backend (gloo)")
    b.add_argument("--device", default="cpu", choices=["cpu", "kpt_sim", "cuda", "xpu"],
                   help="device type of every rank (default cpu)")  # fmt: skip
    b.add_argument("--world", type=int, default=2, help="rank processes (default 2)")
    b.add_argument("--sizes", default="4KiB,256KiB,4MiB",
                   help="comma-separated sizes per rank")  # fmt: skip
    b.add_argument("--kinds", default="all_reduce,all_gather,reduce_scatter,broadcast",
                   help="comma-separated collectives to time (default: all four)")  # fmt: skip
    b.add_argument("--iters", type=int, default=20, help="timed runs per size (default 20)")
    b.add_argument("--profile", default="h100-sxm:1,mi300x:1",
                   help="kpt_sim: the daemon started when KPT_SIM_ENDPOINT is unset")  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "plan":
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        try:
            print(format_plans(devices, args.bytes))
        except ValueError as exc:
            print(f"kpt-collectives plan: {exc}", file=sys.stderr)
            return 2
        return 0
    sizes = [parse_bytes(s) for s in args.sizes.split(",")]
    kinds = [k.strip() for k in args.kinds.split(",")]
    title = f"{args.backend} on {args.world} x {args.device}"
    if args.device != "kpt_sim":
        print(format_rows(run_bench(args.backend, args.device, args.world, sizes, kinds,
                                    args.iters), title))  # fmt: skip
        return 0
    import os

    import kpt.sim

    endpoint = os.environ.get("KPT_SIM_ENDPOINT")
    handle = None
    if not endpoint:
        handle = kpt.sim.start_daemon(profile=args.profile, devices=args.world, executor="torch")
        endpoint = handle.endpoint
    try:
        rows = run_bench(args.backend, "kpt_sim", args.world, sizes, kinds, args.iters, endpoint)
    finally:
        if handle is not None:
            handle.stop()
    print(format_rows(rows, f"{title} ({args.profile})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
