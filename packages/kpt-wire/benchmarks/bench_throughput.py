"""64 MiB float32 array round trip between two processes: kpt.wire over ipc:// and unix://
vs raw pyzmq over ipc://.

Both sides send the array frame without copying (copy=False) and echo it back unchanged.
Target (issue 2): kpt.wire >= 80% of raw pyzmq throughput.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _peers import PATHS, print_paths, three_paths

from kpt.wire import Client

MIB = 1 << 20
TRIPS = 12  # per path, alternating one trip of each


def main() -> None:
    array = np.random.default_rng(0).standard_normal(64 * MIB // 4, dtype=np.float32)
    samples: dict[str, list[float]] = {path: [] for path in PATHS}
    with three_paths(timeout=60) as (over_zmq, over_unix, raw):
        header = {"dtype": "float32", "shape": list(array.shape)}

        def raw_trip() -> None:
            raw.send_multipart([msgpack.packb(header), array], copy=False)
            frames = raw.recv_multipart(copy=False)
            assert np.frombuffer(frames[1].buffer, dtype=np.float32).size == array.size

        def trip_on(client: Client):
            def trip() -> None:
                reply = client.call("echo", {"n": array.size}, [array])
                assert reply.arrays[0].nbytes == array.nbytes

            return trip

        trips = {PATHS[0]: trip_on(over_zmq), PATHS[1]: trip_on(over_unix), PATHS[2]: raw_trip}
        for trip in trips.values():
            trip()  # warm up
        # Alternating trips: load drift on a shared machine hits all alike.
        for _ in range(TRIPS):
            for path, trip in trips.items():
                started = time.perf_counter()
                trip()
                samples[path].append(time.perf_counter() - started)
    moved = 2 * array.nbytes / 1e9  # there and back
    print_paths(
        f"64 MiB float32 round trip, 2 processes, {TRIPS} trips per path (alternating)",
        "GB/s",
        {path: (moved / statistics.median(v), moved / min(v)) for path, v in samples.items()},
        lower=False,
    )


if __name__ == "__main__":
    main()
