"""Small-message round trip between two processes: kpt.wire over ipc:// (ZeroMQ) and over
unix:// (a Unix stream socket), against raw pyzmq REQ/REP+msgpack, in alternating rounds.

Targets (issue 2): median <= 60 us and <= 1.3x raw pyzmq.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).parent))
from _peers import PATHS, print_paths, three_paths

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
    samples: dict[str, list[float]] = {path: [] for path in PATHS}
    with three_paths() as (over_zmq, over_unix, raw):

        def raw_call() -> None:
            raw.send(msgpack.packb(HEADER))
            msgpack.unpackb(raw.recv())

        calls = {
            PATHS[0]: lambda: over_zmq.call("echo", HEADER),
            PATHS[1]: lambda: over_unix.call("echo", HEADER),
            PATHS[2]: raw_call,
        }
        for call in calls.values():
            _timed(call, WARMUP, [])
        # Many short alternating blocks: load drift on a shared machine hits all alike.
        for _ in range(ROUNDS):
            for path, call in calls.items():
                _timed(call, CALLS // ROUNDS, samples[path])
    print_paths(
        f"small-message round trip, 2 processes, {CALLS} calls per path ({ROUNDS} rounds)",
        "us",
        {path: _percentiles(values) for path, values in samples.items()},
        lower=True,
    )


if __name__ == "__main__":
    main()
