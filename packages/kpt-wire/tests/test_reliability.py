"""Failure injection against a server in a real subprocess: kill, restart, load."""

import threading
import time

import numpy as np
import pytest

from kpt.wire import Client, RemoteError, TransportError

HEARTBEAT = 0.2  # as in conftest.py
LIVENESS_BOUND = 3 * HEARTBEAT


def test_killed_server_raises_within_liveness_bound_then_client_recovers(server_process):
    server = server_process()
    endpoint = server.start()
    with Client(endpoint, timeout=30, heartbeat_interval=HEARTBEAT) as client:
        assert client.call("echo", {"n": 1}).header == {"n": 1}
        outcome = {}

        def long_call():
            started = time.monotonic()
            try:
                client.call("sleep", {"seconds": 20}, timeout=30)
            except TransportError as exc:
                outcome["error"] = exc
            outcome["waited"] = time.monotonic() - started

        caller = threading.Thread(target=long_call)
        caller.start()
        time.sleep(0.1)
        killed_at = time.monotonic()
        server.kill()
        caller.join(10)
        assert isinstance(outcome.get("error"), TransportError), outcome
        # ZeroMQ learns it from missed heartbeats; a unix:// stream from the closed socket.
        expected = "lost" if endpoint.startswith("unix://") else "dead or unreachable"
        assert expected in str(outcome["error"])
        # The server might have died a hair after the last heartbeat reply: one interval slack.
        assert time.monotonic() - killed_at < LIVENESS_BOUND + HEARTBEAT + 0.5

        server.start()  # same endpoint
        reply = client.call("echo", {"back": True}, timeout=5, idempotent=True)
        assert reply.header == {"back": True}


def test_idempotent_calls_retry_across_a_restart_and_others_do_not(server_process):
    server = server_process()
    endpoint = server.start()
    # retries=12: about 15 s of capped backoff, room for a restart on a loaded machine
    with Client(endpoint, timeout=1, heartbeat_interval=HEARTBEAT, retries=12) as client:
        client.call("echo")
        server.kill()
        with pytest.raises(TransportError):
            client.call("echo", {"once": True})  # not idempotent: one attempt only
        restarter = threading.Timer(0.3, server.start)
        restarter.start()
        try:
            reply = client.call("echo", {"retried": True}, idempotent=True)
        finally:
            restarter.join()
        assert reply.header == {"retried": True}


def test_remote_errors_from_a_process_keep_code_and_details(server_process):
    endpoint = server_process().start()
    with Client(endpoint, heartbeat_interval=HEARTBEAT) as client:
        with pytest.raises(RemoteError) as info:
            client.call("fail", {"value": 3})
        assert info.value.code == "refused" and info.value.details == {"value": 3}


def test_sixteen_clients_two_thousand_calls_each_no_lost_or_mismatched_reply(server_process):
    endpoint = server_process().start()
    clients = [Client(endpoint, timeout=30, heartbeat_interval=1.0) for _ in range(16)]
    failures: list[str] = []
    counts = [0] * len(clients)

    def run(index: int) -> None:
        client = clients[index]
        payload = np.full(4, index, dtype=np.int32)
        try:
            for i in range(2000):
                reply = client.call("echo", {"c": index, "i": i}, [payload] if i % 50 == 0 else ())
                if reply.header != {"c": index, "i": i}:
                    failures.append(f"client {index} call {i} got {reply.header}")
                    return
                if i % 50 == 0 and reply.arrays[0].tolist() != [index] * 4:
                    failures.append(f"client {index} call {i} got array {reply.arrays[0]}")
                    return
                counts[index] += 1
        except Exception as exc:  # reported below with the client's index
            failures.append(f"client {index}: {exc!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(100)
    finally:
        for client in clients:
            client.close()
    assert failures == []
    assert counts == [2000] * 16
