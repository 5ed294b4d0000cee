"""Echo servers for the benchmarks, each run in its own process: kpt.wire and raw pyzmq.

python _peers.py kpt|raw-rep|raw-router ENDPOINT: prints "ready" once bound, serves until
stdin closes.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import zmq


def serve_kpt(endpoint: str) -> None:
    from kpt.wire import Server

    server = Server(endpoint)
    server.register("echo", lambda msg, client: (msg.header, msg.arrays))
    with server:
        print("ready", flush=True)
        sys.stdin.readline()


def serve_raw(endpoint: str, kind: int) -> None:
    """REP (or ROUTER) echo: unpack the msgpack header, pack it back, return array frames as-is."""
    context = zmq.Context()
    socket = context.socket(kind)
    socket.linger = 0
    socket.bind(endpoint)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    envelope = 1 if kind == zmq.ROUTER else 0
    while not stop.is_set():
        if not socket.poll(100):
            continue
        frames = socket.recv_multipart(copy=False)
        header = msgpack.unpackb(frames[envelope].bytes)
        out = [*frames[:envelope], msgpack.packb(header), *frames[envelope + 1 :]]
        socket.send_multipart(out, copy=len(frames) <= envelope + 1)
    socket.close(0)
    context.term()


class Peer:
    """One echo server process; ``with Peer("kpt", endpoint):``."""

    def __init__(self, kind: str, endpoint: str):
        self.args = [sys.executable, str(Path(__file__)), kind, endpoint]

    def __enter__(self) -> Peer:
        self.process = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


PATHS = ("kpt.wire ipc://", "kpt.wire unix://", "raw pyzmq ipc://")


@contextlib.contextmanager
def three_paths(timeout: float = 10.0) -> Iterator[tuple]:
    """Echo servers in their own processes for each of PATHS; yields (kpt.wire Client over
    ipc://, kpt.wire Client over unix://, raw pyzmq REQ socket over ipc://)."""
    from kpt.wire import Client

    with (
        tempfile.TemporaryDirectory(dir="/tmp") as folder,  # short: a socket path has 107 bytes
        Peer("kpt", f"ipc://{folder}/kpt.sock"),
        Peer("kpt", f"unix://{folder}/unix.sock"),
        Peer("raw-rep", f"ipc://{folder}/raw.sock"),
        Client(f"ipc://{folder}/kpt.sock", timeout=timeout) as over_zmq,
        Client(f"unix://{folder}/unix.sock", timeout=timeout) as over_unix,
    ):
        context = zmq.Context()
        raw = context.socket(zmq.REQ)
        raw.linger = 0
        raw.connect(f"ipc://{folder}/raw.sock")
        try:
            yield over_zmq, over_unix, raw
        finally:
            raw.close(0)
            context.term()


def print_paths(title: str, unit: str, figures: dict[str, tuple[float, float]], lower: bool):
    """figures: path -> (median, second figure); the ratio is each median over raw pyzmq's."""
    second = "p99" if lower else "best"
    raw = figures[PATHS[2]][0]
    print(f"\n{title}")
    print(f"| {'path':<18} | {'median ' + unit:>12} | {second + ' ' + unit:>10} | {'vs raw':>7} |")
    print(f"|{'-' * 20}|{'-' * 14}|{'-' * 12}|{'-' * 9}|")
    for path, (median, other) in figures.items():
        print(f"| {path:<18} | {median:>12.2f} | {other:>10.2f} | {median / raw:>6.2f}x |")
    better = "lower" if lower else "higher"
    print(f"({better} is better; the ratio is each median over raw pyzmq's)")


def print_table(title: str, unit: str, rows: list[tuple[str, float, float]], better: str) -> None:
    """rows: (what, kpt figure, raw pyzmq figure). ratio = kpt / raw."""
    print(f"\n{title}")
    print(f"| {'measure':<28} | {'kpt.wire':>12} | {'raw pyzmq':>12} | {'ratio':>6} |")
    print(f"|{'-' * 30}|{'-' * 14}|{'-' * 14}|{'-' * 8}|")
    for what, kpt, raw in rows:
        print(
            f"| {what + ' (' + unit + ')':<28} | {kpt:>12.1f} | {raw:>12.1f} | {kpt / raw:>6.2f} |"
        )
    print(f"({better} is better; ratio = kpt.wire / raw pyzmq)")


if __name__ == "__main__":
    role, address = sys.argv[1], sys.argv[2]
    if role == "kpt":
        serve_kpt(address)
    else:
        serve_raw(address, zmq.REP if role == "raw-rep" else zmq.ROUTER)
