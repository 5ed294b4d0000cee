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

CALLS = 40_000  # per side, in ROUNDS alternating blocks
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
    kpt, raw, ratios = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        kpt_endpoint, raw_endpoint = f"ipc://{folder}/kpt.sock", f"ipc://{folder}/raw.sock"
        with Peer("kpt", kpt_endpoint), Peer("raw-rep", raw_endpoint):
            context = zmq.Context()
            socket = context.socket(zmq.REQ)
            socket.linger = 0
            socket.connect(raw_endpoint)

            def raw_call() -> None:
                socket.send(msgpack.packb(HEADER))
                msgpack.unpackb(socket.recv())

            with Client(kpt_endpoint) as client:

                def kpt_call() -> None:
                    client.call("echo", HEADER)

                _timed(raw_call, WARMUP, [])
                _timed(kpt_call, WARMUP, [])
                # Many short alternating blocks: load drift on a shared machine hits both alike.
                for _ in range(ROUNDS):
                    raw_round, kpt_round = [], []
                    _timed(raw_call, CALLS // ROUNDS, raw_round)
                    _timed(kpt_call, CALLS // ROUNDS, kpt_round)
                    ratios.append(statistics.median(kpt_round) / statistics.median(raw_round))
                    raw += raw_round
                    kpt += kpt_round
            socket.close(0)
            context.term()
    kpt_median, kpt_p99 = _percentiles(kpt)
    raw_median, raw_p99 = _percentiles(raw)
    print_table(
        f"small-message round trip, 2 processes over ipc, {CALLS} calls each "
        f"({ROUNDS} alternating rounds)",
        "us",
        [("median", kpt_median, raw_median), ("p99", kpt_p99, raw_p99)],
        better="lower",
    )
    ratios.sort()
    print(
        f"per-round median ratio: {statistics.median(ratios):.2f} "
        f"(rounds ranged {ratios[0]:.2f} to {ratios[-1]:.2f})"
    )


if __name__ == "__main__":
    main()
