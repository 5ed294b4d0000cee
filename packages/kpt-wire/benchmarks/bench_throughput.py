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
TRIPS = 30  # per side, alternating one raw trip and one kpt.wire trip


def main() -> None:
    array = np.random.default_rng(0).standard_normal(64 * MIB // 4, dtype=np.float32)
    kpt, raw = [], []
    with tempfile.TemporaryDirectory() as folder:
        kpt_endpoint, raw_endpoint = f"ipc://{folder}/kpt.sock", f"ipc://{folder}/raw.sock"
        with Peer("kpt", kpt_endpoint), Peer("raw-rep", raw_endpoint):
            context = zmq.Context()
            socket = context.socket(zmq.REQ)
            socket.linger = 0
            socket.connect(raw_endpoint)
            header = {"dtype": "float32", "shape": list(array.shape)}

            def raw_trip() -> None:
                socket.send_multipart([msgpack.packb(header), array], copy=False)
                frames = socket.recv_multipart(copy=False)
                assert np.frombuffer(frames[1].buffer, dtype=np.float32).size == array.size

            with Client(kpt_endpoint, timeout=60) as client:

                def kpt_trip() -> None:
                    reply = client.call("echo", {"n": array.size}, [array])
                    assert reply.arrays[0].nbytes == array.nbytes

                raw_trip(), kpt_trip()  # warm up
                # Alternating trips: load drift on a shared machine hits both alike.
                for _ in range(TRIPS):
                    for trip, samples in ((raw_trip, raw), (kpt_trip, kpt)):
                        started = time.perf_counter()
                        trip()
                        samples.append(time.perf_counter() - started)
            socket.close(0)
            context.term()
    moved = 2 * array.nbytes / 1e9  # there and back
    print_table(
        f"64 MiB float32 round trip, 2 processes over ipc, {len(kpt)} trips each (alternating)",
        "GB/s",
        [
            ("median throughput", moved / statistics.median(kpt), moved / statistics.median(raw)),
            ("best throughput", moved / min(kpt), moved / min(raw)),
        ],
        better="higher",
    )


if __name__ == "__main__":
    main()
