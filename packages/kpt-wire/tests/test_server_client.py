import asyncio
import threading
import time

import ml_dtypes
import msgpack
import numpy as np
import pytest

from kpt.wire import (
    PROTOCOL,
    VERSION,
    AsyncClient,
    CallTimeout,
    Client,
    HandlerError,
    Limits,
    ProtocolError,
    RemoteError,
    Server,
    TransportError,
    decode,
    encode,
)

HEARTBEAT = 0.2  # as in conftest.py: short, so liveness tests finish quickly


def test_call_returns_header_and_arrays(client):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = np.ones(5, dtype=ml_dtypes.bfloat16)
    reply = client.call("echo", {"nbytes": 1024}, arrays=[x, y])
    assert reply.type == "echo" and reply.header == {"nbytes": 1024}
    np.testing.assert_array_equal(reply.arrays[0], x)
    assert reply.arrays[1].dtype == ml_dtypes.bfloat16 and reply.arrays[1].tobytes() == y.tobytes()


def test_handler_errors_reach_the_caller_and_the_server_keeps_serving(echo_server, client):
    def refuse(msg, client_id):
        raise HandlerError("out_of_memory", "asked for too much", requested=msg.header["n"])

    echo_server.register("refuse", refuse)
    echo_server.register("crash", lambda msg, client_id: {"x": 1 / 0})
    echo_server.register("bad_reply", lambda msg, client_id: 42)
    with pytest.raises(RemoteError) as info:
        client.call("refuse", {"n": 7})
    assert (info.value.code, info.value.message) == ("out_of_memory", "asked for too much")
    assert info.value.details == {"requested": 7}
    with pytest.raises(RemoteError, match="ZeroDivisionError") as info:
        client.call("crash")
    assert info.value.code == "internal"
    with pytest.raises(RemoteError, match="returned int"):
        client.call("bad_reply")
    with pytest.raises(RemoteError, match=r"no handler for message type 'nope'.*echo") as info:
        client.call("nope")
    assert info.value.code == "unknown_type"
    assert client.call("echo", {"still": "serving"}).header == {"still": "serving"}


def test_handlers_see_a_stable_client_id_and_run_on_one_thread(echo_server, client):
    seen = []
    echo_server.register("who", lambda msg, cid: seen.append((cid, threading.get_ident())) or {})
    for _ in range(3):
        client.call("who")
    assert {cid for cid, _ in seen} == {client.client_id}
    assert len({thread for _, thread in seen}) == 1
    assert seen[0][1] != threading.get_ident()


def test_cast_is_one_way_and_returns_at_once(echo_server, client):
    got = threading.Event()
    echo_server.register("launch", lambda msg, cid: got.set())
    started = time.perf_counter()
    client.cast("launch", {"kernel": "k"}, [np.zeros(3)])
    assert time.perf_counter() - started < 0.5
    assert got.wait(5)
    assert client.call("echo", {"after": 1}).header == {"after": 1}  # no stray reply in the way


def test_call_async_resolves_futures_out_of_order(echo_server, client):
    echo_server.register("slow", lambda msg, cid: time.sleep(0.05) or {"slow": True})
    slow = client.call_async("slow")
    fast = [client.call_async("echo", {"i": i}) for i in range(20)]
    assert [f.result(5).header["i"] for f in fast] == list(range(20))
    assert slow.result(5).header == {"slow": True}


def test_call_times_out_while_server_is_alive_but_slow(echo_server, client):
    echo_server.register("slow", lambda msg, cid: time.sleep(0.3) or {})
    started = time.perf_counter()
    with pytest.raises(CallTimeout, match="slow"):
        client.call("slow", timeout=0.1)
    assert time.perf_counter() - started < 0.29
    assert client.call("echo", {"late_reply": "dropped"}).header == {"late_reply": "dropped"}


def test_reserved_types_cannot_be_called_or_registered(echo_server, client):
    with pytest.raises(ValueError, match="reserved"):
        client.call("_heartbeat")
    with pytest.raises(ValueError, match="reserved"):
        echo_server.register("_error", lambda m, c: None)


def test_many_threads_share_one_client(client):
    errors = []

    def worker(offset):
        try:
            for i in range(100):
                value = offset * 1000 + i
                assert client.call("echo", {"v": value}).header["v"] == value
        except Exception as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors


def test_server_forgets_a_silent_client_and_says_so():
    gone = []
    server = Server("tcp://127.0.0.1:0", heartbeat_interval=HEARTBEAT, on_client_gone=gone.append)
    server.register("echo", lambda msg, cid: msg.header)
    with server:
        client = Client(server.endpoint, heartbeat_interval=HEARTBEAT)
        client.call("echo")
        time.sleep(5 * HEARTBEAT)  # idle but heartbeating: still known
        assert gone == [] and server.clients == [client.client_id]
        client.close()
        deadline = time.monotonic() + 10 * HEARTBEAT
        while not gone and time.monotonic() < deadline:
            time.sleep(HEARTBEAT / 4)
        assert gone == [client.client_id]
        assert server.clients == []


def test_version_mismatch_is_answered_with_an_error_naming_both(echo_server, raw_peer):
    peer = raw_peer(echo_server.endpoint)
    frames = encode("echo", {}, request_id=77)
    frames[0] = PROTOCOL + (VERSION + 1).to_bytes(2, "big")
    peer.send(frames)
    reply = decode(peer.recv(5))
    assert reply.type == "_error" and reply.request_id == 77
    assert reply.header["code"] == "version"
    assert f"version {VERSION + 1}" in reply.header["message"]
    assert f"version {VERSION}" in reply.header["message"]


def test_client_refuses_bad_arguments_with_clear_errors():
    with pytest.raises(ValueError, match="endpoint"):
        Client("localhost:5555")
    with pytest.raises(ValueError, match="retries"):
        Client("tcp://127.0.0.1:1", retries=-1)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        Server("tcp://127.0.0.1:0", heartbeat_interval=0)


def test_closed_client_raises_transport_error(echo_server):
    client = Client(echo_server.endpoint)
    client.close()
    with pytest.raises(TransportError, match="closed"):
        client.call("echo")


def test_unreachable_server_raises_within_the_liveness_bound(tmp_path):
    with Client(f"ipc://{tmp_path}/nobody.sock", heartbeat_interval=HEARTBEAT) as client:
        started = time.perf_counter()
        with pytest.raises(TransportError, match="dead or unreachable"):
            client.call("echo", timeout=30)
        assert time.perf_counter() - started < 3 * HEARTBEAT + 0.5


async def test_async_client(echo_server):
    # 1 s heartbeats: not a liveness test, and a 0.6 s window failed once on a loaded CI host.
    async with AsyncClient(echo_server.endpoint, heartbeat_interval=1.0) as client:
        replies = await asyncio.gather(*(client.call("echo", {"i": i}) for i in range(10)))
        assert [r.header["i"] for r in replies] == list(range(10))
        with pytest.raises(RemoteError, match="unknown_type"):
            await client.call("nope")
        await client.cast("echo", {})


def test_call_async_times_out_with_call_timeout(echo_server, client):
    echo_server.register("slow", lambda msg, cid: time.sleep(0.4) or {})
    future = client.call_async("slow", timeout=0.1)
    with pytest.raises(CallTimeout):
        future.result(5)
    assert client.call("echo", {"ok": 1}).header == {"ok": 1}


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_server_limits_answer_oversized_messages_with_a_limit_error(transport, short_dir):
    limits = Limits(max_frames=6, max_header_bytes=256, max_message_bytes=1 << 16)
    endpoint = "tcp://127.0.0.1:0" if transport == "tcp" else f"unix://{short_dir}/limits.sock"
    server = Server(endpoint, limits=limits, heartbeat_interval=HEARTBEAT)
    server.register("echo", lambda msg, cid: msg.header)
    with server, Client(server.endpoint, heartbeat_interval=HEARTBEAT, timeout=2) as client:
        with pytest.raises(RemoteError, match="over the limit of 256") as info:
            client.call("echo", {"big": "x" * 300})
        assert info.value.code == "limit"
        with pytest.raises(RemoteError, match="frames, over the limit of 6"):
            client.call("echo", {}, [np.zeros(1)] * 4)  # 3 envelope frames + 4
        with pytest.raises(RemoteError, match="bytes, over the limit"):
            client.call("echo", {}, [np.zeros(5000)] * 2)  # each frame under ZeroMQ's cap
        if transport == "tcp":
            # ZeroMQ cuts a single frame over max_message_bytes off with the connection, before
            # Python sees it; the client knows the server's limit from its heartbeat answers and
            # refuses to send such a frame, naming the limit (not "server alive but slow").
            with pytest.raises(ProtocolError, match=r"131\d+ bytes is over .* 65536") as info:
                client.call("echo", {}, [np.zeros(1 << 14)], timeout=1)
            assert info.value.code == "limit"
            with pytest.raises(ProtocolError, match="65536"):
                client.cast("echo", {}, [np.zeros(1 << 14)])
        else:
            # The stream reader drops it unread past its first frames and says why.
            with pytest.raises(RemoteError, match=r"131\d+ bytes, over the limit of 65536"):
                client.call("echo", {}, [np.zeros(1 << 14)], timeout=1)
        assert client.call("echo", {"still": 1}).header == {"still": 1}


def test_a_first_oversized_frame_fails_with_the_limit_not_a_timeout():
    # The very first call, before any heartbeat answer: ZeroMQ drops it with the connection.
    # The heartbeat sent on connect brings the server's limit back, and the call fails with it
    # well before its timeout. Default 1 s heartbeats: the liveness window (3 s) stays far above
    # ZeroMQ's reconnect and the next heartbeat answer, even on a loaded machine.
    server = Server("tcp://127.0.0.1:0", limits=Limits(max_message_bytes=1 << 16))
    server.register("echo", lambda msg, cid: msg.header)
    with server, Client(server.endpoint, timeout=30) as client:
        started = time.monotonic()
        with pytest.raises(ProtocolError, match="over the max_message_bytes of 65536") as info:
            client.call("echo", {}, [np.zeros(1 << 14)])
        assert info.value.code == "limit"
        assert time.monotonic() - started < 15  # the liveness bound, not the 30 s timeout
        assert client.call("echo", {"still": 1}).header == {"still": 1}


@pytest.mark.parametrize(
    ("header", "arrays", "match"),
    [
        # msgpack's strict_map_key lets bin keys through; handlers then failed as `internal`.
        ({"_rid": 41, b"key": 1}, [], "header key b'key' is bytes"),
        # A zero-size array whose other dimension numpy cannot hold was dropped unanswered.
        ({"_rid": 42, "_arrays": [{"dtype": "float32", "shape": [0, 2**62]}]}, [b""], "numpy"),
        ({"_rid": 43, "_arrays": [{"dtype": "int8", "shape": [0, 2**40, 2**40]}]}, [b""], "numpy"),
    ],
)
def test_bin_keys_and_unshapeable_arrays_are_answered_as_protocol_errors(
    echo_server, raw_peer, header, arrays, match
):
    peer = raw_peer(echo_server.endpoint)
    peer.send([PROTOCOL + VERSION.to_bytes(2, "big"), b"echo", msgpack.packb(header), *arrays])
    reply = decode(peer.recv(5))
    assert reply.type == "_error" and reply.request_id == header["_rid"]
    assert reply.header["code"] == "protocol" and match in reply.header["message"]
    peer.send(encode("echo", {"after": 1}, request_id=44))
    assert decode(peer.recv(5)).header == {"after": 1}


def test_close_wakes_the_serving_thread_at_once_even_with_long_heartbeats():
    # The thread blocks in recv for half an interval (5 s here): close() must not wait for it.
    server = Server("tcp://127.0.0.1:0", heartbeat_interval=10.0).start()
    with Client(server.endpoint, heartbeat_interval=10.0) as client:
        server.register("echo", lambda msg, cid: msg.header)
        assert client.call("echo", {"a": 1}).header == {"a": 1}
        started = time.perf_counter()
        server.close()
        assert time.perf_counter() - started < 1.0


def test_a_second_thread_is_served_while_a_lone_caller_waits_in_recv(echo_server, client):
    # The first caller blocks in recv (no poll on the wake pipe); the second queues its request
    # meanwhile and must still get its reply, right after the slow one (one server thread).
    echo_server.register("slow", lambda msg, cid: time.sleep(0.3) or {"slow": True})
    results = {}

    def slow_caller():
        results["slow"] = client.call("slow").header

    thread = threading.Thread(target=slow_caller)
    thread.start()
    time.sleep(0.05)
    started = time.perf_counter()
    assert client.call("echo", {"second": 2}).header == {"second": 2}
    assert time.perf_counter() - started < 1.0
    thread.join(5)
    assert results["slow"] == {"slow": True}


def test_a_cast_while_another_thread_waits_in_recv_costs_no_poke(echo_server, client):
    # A caller waiting in recv never reads the wake pipe: poking it would be a wasted syscall
    # on every cast (kpt.collectives posts while its completion thread polls). The cast goes
    # out from the caller's loop or when it lets go of the socket.
    got = threading.Event()
    echo_server.register("slow", lambda msg, cid: time.sleep(0.3) or {"slow": True})
    echo_server.register("note", lambda msg, cid: got.set())
    pokes = []
    client._poke = lambda: pokes.append(1)
    caller = threading.Thread(target=client.call, args=("slow",))
    caller.start()
    deadline = time.monotonic() + 5
    while not client._drive_lock.locked() and time.monotonic() < deadline:
        time.sleep(0.001)
    client.cast("note")
    caller.join(5)
    assert got.wait(5)
    assert not pokes


def test_timeouts_shorter_than_the_receive_slice_are_kept(echo_server, client):
    echo_server.register("slow", lambda msg, cid: time.sleep(0.5) or {})
    started = time.perf_counter()
    with pytest.raises(CallTimeout):
        client.call("slow", timeout=0.005)
    assert time.perf_counter() - started < 0.4  # long before the reply could have come
    assert client.call("echo", {"after": 1}).header == {"after": 1}
