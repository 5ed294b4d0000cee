"""64 MiB float32 array round trip between two processes over ipc: kpt.wire vs raw pyzmq.

Both sides send the array frame without copying (copy=False) and echo it back unchanged.
Target (issue 2): kpt.wire >= 80% of raw pyzmq throughput.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from _peers import Peer, print_table

from kpt.wire import Client

MIB = 1 << 20
ROUNDS = 3
TRIPS = 10  # per round


def kpt_trips(endpoint: str, array: np.ndarray) -> list[float]:
    with Peer("kpt", endpoint), Client(endpoint, timeout=60) as client:
        client.call("echo", {}, [array])  # warm up
        samples = []
        for _ in range(TRIPS):
            started = time.perf_counter()
            reply = client.call("echo", {"n": array.size}, [array])
            samples.append(time.perf_counter() - started)
        assert reply.arrays[0].nbytes == array.nbytes
        return samples


def raw_trips(endpoint: str, array: np.ndarray) -> list[float]:
    with Peer("raw-rep", endpoint):
        context = zmq.Context()
        socket = context.socket(zmq.REQ)
        socket.linger = 0
        socket.connect(endpoint)
        header = {"dtype": "float32", "shape": list(array.shape)}
        samples = []
        for trip in range(TRIPS + 1):
            started = time.perf_counter()
            socket.send_multipart([msgpack.packb(header), array], copy=False)
            frames = socket.recv_multipart(copy=False)
            np.frombuffer(frames[1].buffer, dtype=np.float32)
            if trip:
                samples.append(time.perf_counter() - started)
        socket.close(0)
        context.term()
        return samples


def main() -> None:
    array = np.random.default_rng(0).standard_normal(64 * MIB // 4, dtype=np.float32)
    kpt, raw = [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(ROUNDS):  # interleaved, so machine drift hits both alike
            raw += raw_trips(f"ipc://{folder}/raw{round_}.sock", array)
            kpt += kpt_trips(f"ipc://{folder}/kpt{round_}.sock", array)
    moved = 2 * array.nbytes / 1e9  # there and back
    print_table(
        f"64 MiB float32 round trip, 2 processes over ipc, {len(kpt)} trips each",
        "GB/s",
        [
            ("median throughput", moved / statistics.median(kpt), moved / statistics.median(raw)),
            ("best throughput", moved / min(kpt), moved / min(raw)),
        ],
        better="higher",
    )


if __name__ == "__main__":
    main()
