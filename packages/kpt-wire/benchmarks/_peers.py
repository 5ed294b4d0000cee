"""Echo servers for the benchmarks, each run in its own process: kpt.wire and raw pyzmq.

python _peers.py kpt|raw-rep|raw-router ENDPOINT: prints "ready" once bound, serves until
stdin closes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
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
