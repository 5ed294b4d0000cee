"""The unix:// transport's own behaviour: stream framing, hostile bytes, disconnects, binding."""

import os
import socket
import stat
import struct
import time

import numpy as np
import pytest

from kpt.wire import Client, Limits, Server, TransportError, encode
from kpt.wire._stream import Oversized, StreamReader, preamble, table

HEARTBEAT = 0.2


@pytest.fixture
def unix_server(short_dir):
    gone: list[bytes] = []
    server = Server(
        f"unix://{short_dir}/s.sock", heartbeat_interval=HEARTBEAT, on_client_gone=gone.append
    )
    server.register("echo", lambda msg, client: (msg.header, msg.arrays))
    with server:
        server.gone = gone
        yield server


def _hung_up(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF, or a reset if it left bytes unread)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def _stream(frames_list: list[list[bytes]]) -> bytes:
    return b"".join(table(frames) + b"".join(frames) for frames in frames_list)


def test_reader_reassembles_messages_cut_at_every_byte():
    messages = [
        [
            bytes(f)
            for f in encode("echo", {"i": i}, [np.arange(i, dtype=np.int16)], request_id=i + 1)
        ]
        for i in range(5)
    ]
    data = _stream(messages)
    left, right = socket.socketpair()
    right.setblocking(False)
    reader = StreamReader(Limits())
    got = []
    try:
        for index in range(len(data)):
            left.sendall(data[index : index + 1])
            got.extend(reader.read(right))
    finally:
        left.close()
        right.close()
    assert [[bytes(f) for f in m] for m in got] == messages


def test_reader_fills_a_large_body_in_place_and_keeps_what_follows():
    big = np.random.default_rng(0).integers(0, 255, 3 << 20, dtype=np.uint8)
    first = [bytes(f) for f in encode("echo", {}, [big], request_id=1)]
    second = [bytes(f) for f in encode("echo", {"after": 1}, request_id=2)]
    left, right = socket.socketpair()
    right.setblocking(False)
    reader = StreamReader(Limits())
    got = []
    data = _stream([first, second])
    try:
        sent = 0
        while len(got) < 2:
            if sent < len(data):
                sent += left.send(data[sent : sent + 100_000])
            try:
                got.extend(reader.read(right))
            except BlockingIOError:
                pass
    finally:
        left.close()
        right.close()
    assert np.array_equal(np.frombuffer(got[0][3], np.uint8), big)
    assert [bytes(f) for f in got[1]] == second


def test_reader_drops_an_oversized_message_names_its_request_and_reads_on():
    limits = Limits(max_message_bytes=1000)
    big = [bytes(f) for f in encode("echo", {}, [np.zeros(4000, np.uint8)], request_id=42)]
    small = [bytes(f) for f in encode("echo", {"ok": 1}, request_id=43)]
    left, right = socket.socketpair()
    right.setblocking(False)
    reader = StreamReader(limits)
    try:
        left.sendall(_stream([big, small]))
        got = reader.read(right)
    finally:
        left.close()
        right.close()
    assert isinstance(got[0], Oversized) and got[0].request_id == 42 and got[0].total > 4000
    assert [bytes(f) for f in got[1]] == small


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x00",  # a message of zero frames
        b"\xff\xff\xff\xff" + b"x" * 64,  # an absurd frame count
        b"GET / HTTP/1.1\r\n\r\n",  # not a kpt.wire client at all (bad preamble)
    ],
)
def test_broken_framing_closes_only_that_connection(unix_server, garbage):
    with Client(unix_server.endpoint, heartbeat_interval=HEARTBEAT) as good:
        assert good.call("echo", {"n": 1}).header == {"n": 1}
        bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bad.connect(unix_server.endpoint[len("unix://") :])
        bad.settimeout(5)
        if not garbage.startswith(b"GET"):
            bad.sendall(preamble(b"hostile"))
        bad.sendall(garbage)
        assert _hung_up(bad)
        bad.close()
        assert good.call("echo", {"n": 2}).header == {"n": 2}


def test_a_closed_client_is_forgotten_at_once_not_after_heartbeats(short_dir):
    gone: list[bytes] = []
    server = Server(f"unix://{short_dir}/g.sock", heartbeat_interval=30, on_client_gone=gone.append)
    server.register("echo", lambda msg, client: msg.header)
    with server:
        client = Client(server.endpoint, heartbeat_interval=30)
        client.call("echo")
        client.close()
        deadline = time.monotonic() + 5
        while not gone and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gone == [client.client_id]  # with 30 s heartbeats, ZeroMQ would take 90 s


def test_large_arrays_cross_both_ways_intact(unix_server):
    data = np.random.default_rng(1).standard_normal(4 << 20).astype(np.float32)  # 16 MiB
    with Client(unix_server.endpoint, heartbeat_interval=HEARTBEAT, timeout=30) as client:
        reply = client.call("echo", {"k": "v"}, [data, np.arange(3)])
    assert reply.header == {"k": "v"}
    assert np.array_equal(reply.arrays[0], data) and reply.arrays[1].tolist() == [0, 1, 2]
    assert not reply.arrays[0].flags.writeable  # views of received memory, like ZeroMQ frames


def test_a_dead_server_fails_calls_at_once_and_a_new_one_is_found(short_dir):
    endpoint = f"unix://{short_dir}/r.sock"
    first = Server(endpoint, heartbeat_interval=HEARTBEAT)
    first.register("echo", lambda msg, client: {"server": 1})
    first.start()
    with Client(endpoint, heartbeat_interval=HEARTBEAT, timeout=5) as client:
        assert client.call("echo").header == {"server": 1}
        first.close()
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"lost|cannot connect"):
            client.call("echo")
        assert time.monotonic() - started < 1  # no heartbeat window to wait out
        second = Server(endpoint, heartbeat_interval=HEARTBEAT)
        second.register("echo", lambda msg, client: {"server": 2})
        with second:
            assert client.call("echo", idempotent=True).header == {"server": 2}


def test_binding_checks_the_path(short_dir):
    path = f"{short_dir}/b.sock"
    with Server(f"unix://{path}").start():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # this user's processes only
        with pytest.raises(OSError, match="another server is listening"):
            Server(f"unix://{path}").start()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file nobody listens on, as a killed server leaves it
    stale.close()
    server = Server(f"unix://{path}")
    server.register("echo", lambda msg, client: {"bound": True})
    with server, Client(server.endpoint) as client:
        assert client.call("echo", timeout=2).header == {"bound": True}
    with open(f"{short_dir}/plain", "w"):
        pass
    with pytest.raises(OSError, match="not a socket"):
        Server(f"unix://{short_dir}/plain").start()


def test_bad_unix_endpoints_are_refused_with_reasons():
    with pytest.raises(ValueError, match="over the 107"):
        Client("unix:///tmp/" + "x" * 120 + ".sock")
    with pytest.raises(ValueError, match="absolute"):
        Server("unix://relative.sock")
    with pytest.raises(ValueError, match="CURVE keys apply to ZeroMQ"):
        Client("unix:///tmp/k.sock", curve_server_key="x" * 40)


def test_frame_table_is_big_endian_count_then_sizes():
    frames = [b"ab", b"", b"cde"]
    assert table(frames) == struct.pack(">4I", 3, 2, 0, 3)


def test_a_frame_over_four_gib_is_refused_before_anything_is_sent():
    class Huge:  # stands for a 4 GiB frame without allocating one
        def __len__(self) -> int:
            return 1 << 32

    with pytest.raises(ValueError, match="4 GiB per frame"):
        table([b"KPTW\x00\x02", Huge()])


def test_a_message_the_stream_cannot_carry_fails_its_call_and_the_client_goes_on(
    unix_server, monkeypatch
):
    from kpt.wire import _stream

    with Client(unix_server.endpoint, heartbeat_interval=HEARTBEAT, timeout=5) as client:
        monkeypatch.setattr(_stream, "table", _refuse_big_tables(_stream.table))
        with pytest.raises(ValueError, match="4 GiB per frame"):
            client.call("echo", {}, [np.zeros(100, np.uint8)])
        assert client.call("echo", {"next": 1}).header == {"next": 1}


def _refuse_big_tables(real):
    def table(frames):
        if len(frames) > 3:  # stands for an array frame over 4 GiB
            raise ValueError(
                "a frame of 4294967296 bytes is over the unix:// transport's 4 GiB per frame"
            )
        return real(frames)

    return table
