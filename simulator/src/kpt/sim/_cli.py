"""`kpt-sim serve | profiles | replay` (also `python -m kpt.sim ...`)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import zmq.auth

from kpt.sim._daemon_access import AccessPolicy, new_token, write_token
from kpt.sim._daemon_host import HostMemory
from kpt.sim._daemon_process import READY_PREFIX, TOKEN_FILE
from kpt.sim._derive import add_profile_command, run_profile_command
from kpt.sim._errors import SimError
from kpt.sim._trace import DEFAULT_TRACE_EVENTS
from kpt.sim._version import __version__
from kpt.wire import ListenerBounds

PARENT_POLL_S = 0.25  # how quickly a daemon notices its parent died


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpt-sim", description="kpt's accelerator simulator")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve simulated devices over kpt.wire")
    serve.add_argument("--profile", default="h100-sxm", help="name, path, or NAME:N,NAME:N mix")
    serve.add_argument("--devices", type=_positive, default=None, help="device count (default 1)")
    serve.add_argument("--topology", default="switch", help="switch, ring or torus2d")
    serve.add_argument("--nodes", type=_positive, default=1, help="nodes the devices split into")
    serve.add_argument(
        "--endpoint",
        default=None,
        help="unix://PATH (fastest on one host), ipc://PATH, tcp://127.0.0.1:PORT, or "
        "tcp://HOST:PORT with --curve-keys; default: a unix socket in a new folder only this "
        "user can enter (0700)",
    )
    serve.add_argument(
        "--admin-token-file", default=None, metavar="PATH",
        help="write the owner's token here (mode 0600): clients that present it (SimClient("
        "admin_token=...) or $KPT_SIM_ADMIN_TOKEN) may reset the daemon, inject faults and "
        "read every client's trace; default: admin.token next to the default socket",
    )  # fmt: skip
    serve.add_argument(
        "--allow-admin", action="store_true",
        help="let EVERY client reset the daemon, inject faults and read every trace (a "
        "single-user test rig; never on a shared daemon)",
    )  # fmt: skip
    serve.add_argument(
        "--curve-keys", default=None, metavar="SECRET_FILE",
        help="the daemon's CURVE key pair (NAME.key_secret from `kpt-wire keygen DIR`): "
        "needed to bind a non-loopback tcp:// endpoint; clients pass its public key",
    )  # fmt: skip
    serve.add_argument(
        "--curve-authorized", default=None, metavar="DIR",
        help="folder of the client public keys (NAME.key) allowed in; default: any client "
        "that knows the daemon's public key",
    )  # fmt: skip
    serve.add_argument(
        "--host-memory-gib", type=float, default=None,
        help="host memory the daemon may spend on buffer values, in total (default: 75%% of "
        "what is available at start); each client may use all of it",
    )  # fmt: skip
    serve.add_argument("--faults", default=None, help="fault file (TOML or JSON)")
    serve.add_argument(
        "--numerics", choices=("on", "off"), default="on",
        help="on: compute tensor values (the executor); off: timing only, no values (faster)",
    )  # fmt: skip
    serve.add_argument(
        "--executor", default="numpy",
        help="what computes values: an entry point of group kpt.sim.executors (numpy; torch "
        "with kpt-adapter-sim installed)",
    )  # fmt: skip
    serve.add_argument(
        "--executor-option", action="append", default=[], metavar="KEY=VALUE",
        help="passed to the executor's constructor (repeatable), e.g. threads=2",
    )  # fmt: skip
    serve.add_argument(
        "--seed", type=int, default=0, help="seed of the simulated noise and faults (default 0)"
    )
    serve.add_argument(
        "--heartbeat", type=_seconds, default=1.0,
        help="seconds between heartbeats to and from clients (default 1)",
    )  # fmt: skip
    serve.add_argument(
        "--record", default=None, metavar="OPS_JSON",
        help="record every timed op; write the op trace (for `kpt-sim replay`) on exit",
    )  # fmt: skip
    serve.add_argument(
        "--trace-events", type=_positive, default=DEFAULT_TRACE_EVENTS,
        help="kernels and transfers the daemon keeps for dump_trace, the newest (default "
        f"{DEFAULT_TRACE_EVENTS:,}, about 50 MB of host memory)",
    )  # fmt: skip
    serve.add_argument(
        "--max-connections", type=_positive, default=ListenerBounds.max_connections,
        help="unix:// endpoints: connections served at once; one more is closed at accept "
        f"(default {ListenerBounds.max_connections})",
    )  # fmt: skip
    serve.add_argument("--parent-pid", type=int, default=None, help="exit when this pid dies")
    serve.add_argument(
        "--cleanup-dir", default=None, help="remove this folder on exit (start_daemon's tmp dir)"
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log clients coming and going")

    profiles = commands.add_parser("profiles", help="table of shipped chip profiles")
    profiles.add_argument("--json", action="store_true", help="print the rows as JSON")
    add_profile_command(commands)

    replay = commands.add_parser("replay", help="replay a JSON op trace in timing-only mode")
    replay.add_argument("trace", help="op trace JSON, as written by `kpt-sim serve --record`")
    replay.add_argument("--profile", default=None, help="override the trace's profile spec")
    replay.add_argument(
        "--devices", type=_positive, default=None, help="override the trace's device count"
    )
    replay.add_argument(
        "--topology", default=None, help="override the trace's topology: switch, ring or torus2d"
    )
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "profiles":
            return print_profiles(as_json=args.json)
        if args.command == "profile":
            return run_profile_command(args)
        return replay(args)
    except (SimError, OSError) as exc:
        print(f"kpt-sim {args.command}: {exc}", file=sys.stderr)
        return 2


def serve(args: argparse.Namespace) -> int:
    from kpt.sim._daemon import SimDaemon
    from kpt.sim._executors import ExecutorNotFoundError, load_executor
    from kpt.sim._simulator import Simulator
    from kpt.wire import Server

    _die_with_parent(args.parent_pid)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s kpt-sim %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    sim = Simulator(
        args.profile, args.devices, topology=args.topology, nodes=args.nodes,
        faults=args.faults, seed=args.seed, trace_events=args.trace_events,
    )  # fmt: skip
    options = _options(args.executor_option)
    try:
        executor = load_executor(args.executor, **options)
    except ExecutorNotFoundError as exc:
        raise SimError(str(exc)) from None
    except (ValueError, TypeError) as exc:  # the executor refused a value (threads=abc)
        raise SimError(
            f"--executor-option: executor {args.executor!r} refused {options}: {exc}"
        ) from None
    endpoint, private_dir = _endpoint(args.endpoint)
    token = new_token()
    token_file = args.admin_token_file or (private_dir and os.path.join(private_dir, TOKEN_FILE))
    host_memory = None
    if args.host_memory_gib is not None:
        if not args.host_memory_gib > 0:
            raise SimError(f"--host-memory-gib {args.host_memory_gib!r} must be > 0")
        host_memory = HostMemory(int(args.host_memory_gib * (1 << 30)))
    daemon = SimDaemon(
        sim, executor, args.numerics == "on", args.executor, heartbeat_interval=args.heartbeat,
        access=AccessPolicy(token, allow_admin=args.allow_admin), host_memory=host_memory,
    )  # fmt: skip
    if args.record:
        from kpt.sim._daemon_recorder import OpRecorder

        daemon.recorder = OpRecorder()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = Server(
            endpoint, heartbeat_interval=args.heartbeat, on_client_gone=daemon.client_gone,
            # Over ZeroMQ (other hosts) heartbeats are answered while a handler computes, so a
            # remote client tells a busy daemon from a dead one.
            handler_thread=not endpoint.startswith("unix://"),
            bounds=ListenerBounds(max_connections=args.max_connections),
            **_curve(args.curve_keys, args.curve_authorized),
        )  # fmt: skip
    except ValueError as exc:  # kpt.wire's checks of the endpoint: say it in one line
        raise SimError(f"--endpoint: {exc}") from None
    daemon.register(server)
    server.start()
    if token_file:
        write_token(token_file, token)
    try:
        print(f"{READY_PREFIX}{server.endpoint}", flush=True)
        print(
            f"kpt-sim: serving {len(sim.devices)} device(s) ({args.profile}, {args.topology}, "
            f"numerics {args.numerics}, executor {args.executor}) at {server.endpoint}; "
            f"clients: export KPT_SIM_ENDPOINT={server.endpoint}"
            + (f"; the owner's token is in {token_file}" if token_file else ""),
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(PARENT_POLL_S):
            if args.parent_pid is not None and os.getppid() != args.parent_pid:
                break  # the parent died: we were re-parented
    finally:
        server.close()
        if args.record and daemon.recorder is not None:
            Path(args.record).write_text(json.dumps(daemon.recorder.document(sim)))
        if args.cleanup_dir:  # the parent may be dead (that may be why we stop): tidy up
            shutil.rmtree(args.cleanup_dir, ignore_errors=True)
        if private_dir:
            shutil.rmtree(private_dir, ignore_errors=True)
    return 0


def _endpoint(given: str | None) -> tuple[str, str | None]:
    """The endpoint to bind, and the private folder made for it (None if the user named one)."""
    if given is not None:
        return given, None
    folder = tempfile.mkdtemp(prefix="kpt-sim-")  # mode 0700: other users cannot connect
    return f"unix://{folder}/daemon.sock", folder


def _curve(secret_file: str | None, authorized: str | None) -> dict[str, object]:
    if secret_file is None:
        if authorized is not None:
            raise SimError("--curve-authorized needs --curve-keys (the daemon's own key pair)")
        return {}
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (OSError, ValueError) as exc:
        raise SimError(f"--curve-keys {secret_file!r}: cannot load a key pair: {exc}") from None
    if secret is None:
        raise SimError(
            f"--curve-keys {secret_file!r} holds only a public key; pass the NAME.key_secret "
            "file that `kpt-wire keygen DIR` wrote"
        )
    return {"curve_secret_key": secret, "curve_public_key": public, "authorized_keys": authorized}


def _options(pairs: list[str]) -> dict[str, object]:
    """KEY=VALUE strings as keyword arguments; values that parse as JSON numbers/bools are."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise SimError(f"--executor-option {pair!r} must look like KEY=VALUE, e.g. threads=2")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _die_with_parent(parent_pid: int | None) -> None:
    """Refuse to start for a parent that is already gone; serve() then polls os.getppid().

    (Not PR_SET_PDEATHSIG: Linux sends it when the parent THREAD exits, and start_daemon()
    may well be called from a short-lived thread.)
    """
    if parent_pid is not None and os.getppid() != parent_pid:
        raise SimError(f"parent process {parent_pid} is already gone")


# (column title, summary field, divisor) for the headline figures of `kpt-sim profiles`
PROFILE_COLUMNS = (
    ("profile", "profile", None),
    ("vendor", "vendor", None),
    ("model", "model", None),
    ("calibrated", "calibrated", None),
    ("memory GiB", "memory_total", 1 << 30),
    ("HBM TB/s", "hbm_bandwidth", 1e12),
    ("bf16 matrix TFLOP/s", "peak_bf16_matrix_flops", 1e12),
    ("fp32 vector TFLOP/s", "peak_fp32_vector_flops", 1e12),
    ("chip links GB/s", "chip_link_bandwidth", 1e9),
    ("host link GB/s", "host_link_bandwidth", 1e9),
    ("power W", "power_w", 1),
)


def print_profiles(as_json: bool = False) -> int:
    from kpt.sim import profile_table

    rows = profile_table()
    if as_json:
        print(json.dumps(_plain(rows), indent=2))
        return 0 if rows else 1
    if not rows:
        print("no profiles shipped")
        return 1
    columns = [c for c in PROFILE_COLUMNS if c[1] in rows[0]]
    cells = [
        [_cell(row[key] / scale if scale else row[key]) for _, key, scale in columns]
        for row in rows
    ]
    widths = [max(len(c[0]), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c[0].ljust(w) for c, w in zip(columns, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return "" if value is None else str(value)


def replay(args: argparse.Namespace) -> int:
    from kpt.sim import replay as run_replay
    from kpt.sim._replay import format_replay

    summary = run_replay(
        args.trace, profile=args.profile, devices=args.devices, topology=args.topology
    )
    if args.json:
        print(json.dumps(_plain(summary), indent=2))
        return 0
    print(format_replay(summary, args.trace))
    return 0


def _plain(value: object) -> object:
    if hasattr(value, "_asdict"):
        value = value._asdict()
    elif hasattr(value, "__dataclass_fields__"):
        value = {k: getattr(value, k) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
