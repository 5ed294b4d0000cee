"""Requests per second from 16 concurrent clients (threads) to one server process over ipc.

kpt.wire: 16 Client objects against a kpt.wire Server. Baseline: 16 raw pyzmq DEALER sockets
against a raw ROUTER echo loop, same msgpack header, same machine, same run.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from _peers import Peer, print_table

from kpt.wire import Client

CLIENTS = 16
SECONDS = 3.0
HEADER = {"op": "read", "offset": 4096, "nbytes": 256}


def _run_threads(work) -> float:
    """Start CLIENTS threads running work(stop) -> calls made; requests/s over SECONDS."""
    counts = [0] * CLIENTS
    stop = threading.Event()

    def body(index: int) -> None:
        counts[index] = work(stop)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in threads:
        thread.join(30)
    return sum(counts) / SECONDS


def kpt_rate(endpoint: str) -> float:
    with Peer("kpt", endpoint):
        clients = [Client(endpoint) for _ in range(CLIENTS)]
        pool = iter(clients)
        lock = threading.Lock()

        def work(stop: threading.Event) -> int:
            with lock:
                client = next(pool)
            calls = 0
            while not stop.is_set():
                client.call("echo", HEADER)
                calls += 1
            return calls

        try:
            return _run_threads(work)
        finally:
            for client in clients:
                client.close()


def raw_rate(endpoint: str) -> float:
    with Peer("raw-router", endpoint):
        context = zmq.Context()

        def work(stop: threading.Event) -> int:
            socket = context.socket(zmq.DEALER)
            socket.linger = 0
            socket.connect(endpoint)
            calls = 0
            while not stop.is_set():
                socket.send(msgpack.packb(HEADER))
                msgpack.unpackb(socket.recv())
                calls += 1
            socket.close(0)
            return calls

        rate = _run_threads(work)
        context.term()
        return rate


def main() -> None:
    kpt, raw = [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(2):
            raw.append(raw_rate(f"ipc://{folder}/raw{round_}.sock"))
            kpt.append(kpt_rate(f"ipc://{folder}/kpt{round_}.sock"))
    print_table(
        f"{CLIENTS} concurrent clients (threads), one server process, ipc",
        "req/s",
        [("requests per second", sum(kpt) / len(kpt), sum(raw) / len(raw))],
        better="higher",
    )


if __name__ == "__main__":
    main()
