"""Small-message round trip between two processes: kpt.wire over ipc:// (ZeroMQ) and over
unix:// (a Unix stream socket), against raw pyzmq REQ/REP+msgpack, in alternating rounds.

Targets (issue 2): median <= 60 us and <= 1.3x raw pyzmq.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from _peers import Peer

from kpt.wire import Client

CALLS = 20_000  # per path, in ROUNDS alternating blocks
ROUNDS = 20
WARMUP = 2_000
HEADER = {"op": "alloc", "nbytes": 1024, "device": 0}


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def _timed(call, count: int, samples: list[float]) -> None:
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)


def main() -> None:
    paths = ("kpt.wire ipc://", "kpt.wire unix://", "raw pyzmq ipc://")
    samples: dict[str, list[float]] = {path: [] for path in paths}
    with (
        tempfile.TemporaryDirectory(dir="/tmp") as folder,
        Peer("kpt", f"ipc://{folder}/kpt.sock"),
        Peer("kpt", f"unix://{folder}/unix.sock"),
        Peer("raw-rep", f"ipc://{folder}/raw.sock"),
    ):
        context = zmq.Context()
        socket = context.socket(zmq.REQ)
        socket.linger = 0
        socket.connect(f"ipc://{folder}/raw.sock")

        def raw_call() -> None:
            socket.send(msgpack.packb(HEADER))
            msgpack.unpackb(socket.recv())

        with (
            Client(f"ipc://{folder}/kpt.sock") as over_zmq,
            Client(f"unix://{folder}/unix.sock") as over_unix,
        ):
            calls = {
                paths[0]: lambda: over_zmq.call("echo", HEADER),
                paths[1]: lambda: over_unix.call("echo", HEADER),
                paths[2]: raw_call,
            }
            for call in calls.values():
                _timed(call, WARMUP, [])
            # Many short alternating blocks: load drift on a shared machine hits all alike.
            for _ in range(ROUNDS):
                for path, call in calls.items():
                    _timed(call, CALLS // ROUNDS, samples[path])
        socket.close(0)
        context.term()
    raw_median, _ = _percentiles(samples[paths[2]])
    print(f"\nsmall-message round trip, 2 processes, {CALLS} calls per path ({ROUNDS} rounds)")
    print(f"| {'path':<18} | {'median (us)':>11} | {'p99 (us)':>9} | {'vs raw pyzmq':>12} |")
    print(f"|{'-' * 20}|{'-' * 13}|{'-' * 11}|{'-' * 14}|")
    for path in paths:
        median, p99 = _percentiles(samples[path])
        print(f"| {path:<18} | {median:>11.1f} | {p99:>9.1f} | {median / raw_median:>11.2f}x |")
    print("(lower is better; the ratio is each median over raw pyzmq's)")


if __name__ == "__main__":
    main()
