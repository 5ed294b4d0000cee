"""Small-message round trip between two processes over ipc: kpt.wire vs raw pyzmq REQ/REP+msgpack.

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
from _peers import Peer, print_table

from kpt.wire import Client

CALLS = 20_000
WARMUP = 2_000
HEADER = {"op": "alloc", "nbytes": 1024, "device": 0}


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def kpt_round_trips(endpoint: str) -> list[float]:
    with Peer("kpt", endpoint), Client(endpoint) as client:
        samples = []
        for i in range(WARMUP + CALLS):
            started = time.perf_counter()
            client.call("echo", HEADER)
            if i >= WARMUP:
                samples.append(time.perf_counter() - started)
        return samples


def raw_round_trips(endpoint: str) -> list[float]:
    with Peer("raw-rep", endpoint):
        context = zmq.Context()
        socket = context.socket(zmq.REQ)
        socket.linger = 0
        socket.connect(endpoint)
        samples = []
        for i in range(WARMUP + CALLS):
            started = time.perf_counter()
            socket.send(msgpack.packb(HEADER))
            msgpack.unpackb(socket.recv())
            if i >= WARMUP:
                samples.append(time.perf_counter() - started)
        socket.close(0)
        context.term()
        return samples


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        # Interleave two rounds each, so drift on a shared machine hits both sides alike.
        kpt, raw = [], []
        for round_ in range(2):
            raw += raw_round_trips(f"ipc://{folder}/raw{round_}.sock")
            kpt += kpt_round_trips(f"ipc://{folder}/kpt{round_}.sock")
    kpt_median, kpt_p99 = _percentiles(kpt)
    raw_median, raw_p99 = _percentiles(raw)
    print_table(
        f"small-message round trip, 2 processes over ipc, {2 * CALLS} calls each",
        "us",
        [("median", kpt_median, raw_median), ("p99", kpt_p99, raw_p99)],
        better="lower",
    )


if __name__ == "__main__":
    main()
