"""64 MiB float32 array round trip between two processes: kpt.wire over ipc:// and unix://
vs raw pyzmq over ipc://.

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
from _peers import Peer

from kpt.wire import Client

MIB = 1 << 20
TRIPS = 12  # per path, alternating one trip of each


def main() -> None:
    array = np.random.default_rng(0).standard_normal(64 * MIB // 4, dtype=np.float32)
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
        header = {"dtype": "float32", "shape": list(array.shape)}

        def raw_trip() -> None:
            socket.send_multipart([msgpack.packb(header), array], copy=False)
            frames = socket.recv_multipart(copy=False)
            assert np.frombuffer(frames[1].buffer, dtype=np.float32).size == array.size

        with (
            Client(f"ipc://{folder}/kpt.sock", timeout=60) as over_zmq,
            Client(f"unix://{folder}/unix.sock", timeout=60) as over_unix,
        ):

            def trip_on(client: Client):
                def trip() -> None:
                    reply = client.call("echo", {"n": array.size}, [array])
                    assert reply.arrays[0].nbytes == array.nbytes

                return trip

            trips = {paths[0]: trip_on(over_zmq), paths[1]: trip_on(over_unix), paths[2]: raw_trip}
            for trip in trips.values():
                trip()  # warm up
            # Alternating trips: load drift on a shared machine hits all alike.
            for _ in range(TRIPS):
                for path, trip in trips.items():
                    started = time.perf_counter()
                    trip()
                    samples[path].append(time.perf_counter() - started)
        socket.close(0)
        context.term()
    moved = 2 * array.nbytes / 1e9  # there and back
    raw_median = moved / statistics.median(samples[paths[2]])
    print(f"\n64 MiB float32 round trip, 2 processes, {TRIPS} trips per path (alternating)")
    print(f"| {'path':<18} | {'median GB/s':>11} | {'best GB/s':>9} | {'vs raw pyzmq':>12} |")
    print(f"|{'-' * 20}|{'-' * 13}|{'-' * 11}|{'-' * 14}|")
    for path in paths:
        median, best = moved / statistics.median(samples[path]), moved / min(samples[path])
        print(f"| {path:<18} | {median:>11.2f} | {best:>9.2f} | {median / raw_median:>11.2f}x |")
    print("(higher is better; the ratio is each median over raw pyzmq's)")


if __name__ == "__main__":
    main()
