"""The unix:// listener's bounds (issue 10, defect 6): connections, half-sent messages, bytes held
across connections, what a closed connection leaves behind, and a full descriptor table."""

import fcntl
import gc
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
import weakref

import numpy as np
import pytest

from kpt.wire import Client, Limits, ListenerBounds, Server, decode, encode
from kpt.wire._stream import StreamReader, preamble, table
from kpt.wire._unix import UnixListener

pytestmark = pytest.mark.timeout(60)
MiB = 1 << 20


class Listener:
    """A UnixListener served on a thread; echoes every message back (a 'sleep' header sleeps)."""

    def __init__(self, folder: str, bounds: ListenerBounds):
        self.path = f"{folder}/l.sock"
        self.listener = UnixListener(f"unix://{self.path}", Limits(), bounds)
        self.gone: list[bytes] = []
        self._stopping = False
        self._thread = threading.Thread(
            target=self.listener.serve,
            kwargs={
                "stopping": lambda: self._stopping,
                "on_message": self._echo,
                "on_oversized": lambda client, message: None,
                "on_gone": self.gone.append,
                "on_tick": lambda now: None,
                "tick_s": 0.05,
            },
            daemon=True,
        )
        self._thread.start()

    def _echo(self, client: bytes, frames: list, now: float) -> None:
        seconds = decode(frames).header.get("sleep")
        if seconds:
            time.sleep(seconds)  # a long handler: the listener hears nobody meanwhile
        self.listener.send(client, frames)

    def close(self) -> None:
        self._stopping = True
        self.listener.wake()
        self._thread.join(10)
        assert not self._thread.is_alive()
        self.listener.close()


@pytest.fixture
def serve(short_dir):
    listeners: list[Listener] = []

    def make(**bounds) -> Listener:
        listeners.append(Listener(short_dir, ListenerBounds(**bounds)))
        return listeners[-1]

    yield make
    for listener in listeners:
        listener.close()


class Peer:
    """A raw unix:// connection: sends exactly the bytes a test wants, reads echoed replies."""

    def __init__(self, path: str, name: bytes | None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        if name is not None:
            try:
                self.sock.sendall(preamble(name))
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused at once (over a bound): hung_up() says so
        self.reader = StreamReader(Limits())
        self.replies: list = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, nbytes: int = 0, timeout: float = 10, **header) -> dict:
        self.send(_message(nbytes, **header))
        return self.reply(timeout)

    def reply(self, timeout: float = 10) -> dict:
        self.sock.settimeout(timeout)
        while not self.replies:
            self.replies.extend(self.reader.read(self.sock))
        return decode(self.replies.pop(0)).header

    def hung_up(self, timeout: float = 10) -> bool:
        """True once the listener closed this connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(1 << 16):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def _message(nbytes: int = 0, **header) -> bytes:
    arrays = [np.full(nbytes, 7, np.uint8)] if nbytes else []
    frames = [bytes(f) for f in encode("echo", header, arrays, request_id=1)]
    return table(frames) + b"".join(frames)


def _until(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_a_server_takes_its_listener_bounds(short_dir):
    # The public way in: Server(bounds=...) on a unix:// endpoint, as kpt-sim's daemon uses it.
    with pytest.raises(TypeError, match=r"kpt\.wire\.ListenerBounds"):
        Server(f"unix://{short_dir}/x.sock", bounds={"max_connections": 1})
    server = Server(f"unix://{short_dir}/s.sock", bounds=ListenerBounds(max_connections=1))
    server.register("echo", lambda msg, client: msg.header)
    server.start()
    path = server.endpoint.removeprefix("unix://")
    first = Peer(path, b"first")
    try:
        assert first.call(n=1) == {"n": 1}  # accepted and served: it holds the one slot
        second = Peer(path, b"second")
        assert second.hung_up(), "a connection over max_connections must be closed at once"
        second.close()
        first.close()
        with Client(server.endpoint, timeout=10) as client:  # the slot is free again
            assert _until(lambda: _answers(client))
    finally:
        first.close()
        server.close()


def _answers(client: Client) -> bool:
    try:
        return client.call("echo", {"n": 2}).header == {"n": 2}
    except Exception:  # the listener may not have seen the first connection close yet
        return False


def test_bounds_are_checked_with_reasons():
    with pytest.raises(ValueError, match="max_connections must be a positive int, got 0"):
        ListenerBounds(max_connections=0)
    with pytest.raises(ValueError, match="partial_message_timeout_s must be > 0 seconds"):
        ListenerBounds(partial_message_timeout_s=float("nan"))


def test_connections_over_the_bound_are_closed_at_once_and_the_others_go_on(serve):
    server = serve(max_connections=3)
    first, second = Peer(server.path, b"first"), Peer(server.path, b"second")
    idle = Peer(server.path, b"idle")
    assert first.call(n=1) == {"n": 1}
    assert _until(lambda: server.listener.connection_count == 3)
    over = [Peer(server.path, b"over-%d" % i) for i in range(5)]
    for peer in over:
        assert peer.hung_up(timeout=5), "a connection over the bound was left open"
    assert _until(lambda: server.listener.refused_connections == 5)
    assert first.call(n=2) == {"n": 2} and second.call(n=3) == {"n": 3}
    assert server.gone == []  # refusing a newcomer disturbed nobody
    idle.close()  # a place frees up: the next one is served
    assert _until(lambda: server.listener.connection_count == 2)
    late = Peer(server.path, b"late")
    assert late.call(n=4) == {"n": 4}
    for peer in (first, second, late, *over):
        peer.close()


def test_a_stalled_half_sent_message_is_dropped_and_its_bytes_released(serve):
    server = serve(partial_message_timeout_s=0.5)
    staller, honest = Peer(server.path, b"staller"), Peer(server.path, b"honest")
    message = _message(4 * MiB)
    staller.send(message[: 2 * MiB])
    assert _until(lambda: server.listener.partial_bytes >= MiB)
    assert staller.hung_up(timeout=10)
    assert _until(lambda: server.gone == [b"staller"])  # told last, once all is released
    assert server.listener.partial_bytes == 0
    assert honest.call(MiB, n=1) == {"n": 1}  # its neighbour's fate did not touch it
    staller.close()
    honest.close()


def test_a_sender_that_trickles_forever_is_dropped_too(serve):
    server = serve(partial_message_timeout_s=0.5)
    trickler = Peer(server.path, b"trickler")
    message = _message(MiB)
    stop = threading.Event()

    def trickle() -> None:
        for index in range(len(message)):
            if stop.wait(0.02):
                return
            try:
                trickler.send(message[index : index + 1])
            except OSError:
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        assert _until(lambda: server.gone == [b"trickler"], timeout=10)
    finally:
        stop.set()
        thread.join(5)
    assert server.listener.partial_bytes == 0
    trickler.close()


def test_a_connection_that_never_greets_is_dropped(serve):
    server = serve(partial_message_timeout_s=0.3)
    silent = Peer(server.path, None)
    half = Peer(server.path, None)
    half.send(preamble(b"half-greeting")[:6])
    assert silent.hung_up(timeout=10) and half.hung_up(timeout=10)
    assert _until(lambda: server.listener.connection_count == 0)
    silent.close()
    half.close()


def test_a_sender_held_up_by_a_long_handler_is_not_blamed(serve):
    # The listener hears nobody while a handler runs: that time is the server's, not the sender's.
    server = serve(partial_message_timeout_s=0.5)
    busy, big = Peer(server.path, b"busy"), Peer(server.path, b"big")
    busy.send(_message(sleep=2.0))
    time.sleep(0.2)  # the handler is running now
    sender = threading.Thread(target=big.send, args=(_message(8 * MiB, n=1),), daemon=True)
    sender.start()
    assert busy.reply(timeout=20) == {"sleep": 2.0}
    assert big.reply(timeout=20) == {"n": 1}
    sender.join(5)
    assert server.gone == []
    busy.close()
    big.close()


def test_a_read_into_a_large_message_takes_no_more_than_its_limit():
    # The listener passes what is left of its partial-byte bound; one read must not jump far
    # past it however much the socket holds (else ten paused senders overshoot ten-fold).
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
    right.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
    message = _message(2 * MiB, n=0)
    sender = threading.Thread(target=left.sendall, args=(message,), daemon=True)
    sender.start()
    try:
        reader = StreamReader(Limits())
        assert reader.read(right) == []  # the first chunk: the table, the header, body begun
        first = reader.held_bytes
        assert _until(lambda: _queued(right) > 4 * 64 * 1024)  # much more waits in the socket
        assert reader.read(right, limit=0) == []
        assert reader.held_bytes - first <= 64 * 1024  # one chunk at most
        while not (done := reader.read(right)):
            pass  # without a limit, reads take what the socket holds, and the message completes
        assert reader.held_bytes == 0 and len(done) == 1
    finally:
        sender.join(10)
        left.close()
        right.close()


def _queued(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0" * 4))[0]


def test_bytes_of_half_sent_messages_are_bounded_across_connections(serve):
    # Past the bound only the oldest incomplete message is read on (so one always completes):
    # what is held stays under the bound plus that message plus a first read (64 KiB) each.
    bound, size, count = 2 * MiB, 4 * MiB, 10
    server = serve(max_partial_bytes=bound)
    peers = [Peer(server.path, b"p%d" % i) for i in range(count)]
    messages = [_message(size, n=i) for i in range(count)]
    cut, go_on = 3 * MiB, threading.Event()

    def send_in_two(peer: Peer, message: bytes) -> None:
        peer.send(message[:cut])  # blocks while the listener does not read this connection
        go_on.wait(30)
        peer.send(message[cut:])

    senders = [
        threading.Thread(target=send_in_two, args=(p, m), daemon=True)
        for p, m in zip(peers, messages, strict=True)
    ]
    for thread in senders:
        thread.start()
    time.sleep(1.5)  # all have sent what the kernel takes; unbounded, 30 MiB would be held
    held = server.listener.partial_bytes
    assert 0 < held <= bound + size + MiB, f"{held} bytes held for partial messages"
    # Paused connections are not dropped: once they send the rest, every message completes.
    go_on.set()
    for index, peer in enumerate(peers):
        assert peer.reply(timeout=30) == {"n": index}
    for thread in senders:
        thread.join(5)
    assert server.gone == [] and server.listener.partial_bytes == 0
    for peer in peers:
        peer.close()


def test_a_closed_connection_releases_what_it_held(serve):
    server = serve()
    hoarder = Peer(server.path, b"hoarder")
    for _ in range(8):  # replies it never reads pile up in the listener
        hoarder.send(_message(MiB))
    assert _until(lambda: server.listener.queued_bytes > MiB)
    hoarder.send(_message(16 * MiB)[: 4 * MiB])  # and half a message
    assert _until(lambda: server.listener.partial_bytes >= 2 * MiB)
    (connection,) = server.listener._by_fd.values()
    body = weakref.ref(connection.reader._body)
    hoarder.close()
    assert _until(lambda: server.gone == [b"hoarder"])  # told last, once all is released
    assert server.listener.connection_count == 0
    assert server.listener.partial_bytes == 0 and server.listener.queued_bytes == 0
    gc.collect()
    assert body() is None, "the half-read message's buffer outlived its connection"
    assert connection.writer.queued_bytes == 0


def test_replies_nobody_reads_are_bounded_in_total(serve):
    server = serve(max_queued_bytes=8 * MiB, max_queued_bytes_total=6 * MiB)
    small, large, reader = (Peer(server.path, name) for name in (b"small", b"large", b"reader"))
    for _ in range(2):
        small.send(_message(MiB))
    assert _until(lambda: server.listener.queued_bytes >= MiB)
    try:
        for _ in range(6):
            large.send(_message(MiB))
    except OSError:
        pass  # dropped while it sent: what the test expects
    assert _until(lambda: b"large" in server.gone), "the largest unread queue was not dropped"
    assert b"small" not in server.gone
    assert reader.call(MiB, n=1) == {"n": 1}
    for peer in (small, large, reader):
        peer.close()


_TAKE_OVER = """
import socket, sys
from kpt.wire._stream import preamble
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
sock.sendall(preamble(b"owner-id"))
sock.settimeout(10)
print("closed" if sock.recv(10) == b"" else "open", flush=True)
"""


def test_a_client_id_in_use_cannot_be_taken_over_by_another_process(serve):
    server = serve()
    owner = Peer(server.path, b"owner-id")
    assert owner.call(n=1) == {"n": 1}
    thief = subprocess.run(
        [sys.executable, "-c", _TAKE_OVER, server.path], capture_output=True, text=True, timeout=30
    )
    assert thief.stdout.strip() == "closed", thief.stderr[-500:]
    assert owner.call(n=2) == {"n": 2}  # still connected, still itself
    assert server.gone == []
    # The same process may reconnect under its id (a client whose connection broke does).
    again = Peer(server.path, b"owner-id")
    assert again.call(n=3) == {"n": 3}
    assert owner.hung_up(timeout=5)
    owner.close()
    again.close()


_EXHAUSTED_SERVER = textwrap.dedent(
    """
    import os, resource, socket, sys, threading
    from kpt.wire import Limits
    from kpt.wire._unix import UnixListener

    class CountingSocket:  # counts accept() calls: a spinning loop makes thousands a second
        def __init__(self, sock):
            self.sock, self.accepts = sock, 0
        def accept(self):
            self.accepts += 1
            return self.sock.accept()
        def __getattr__(self, name):
            return getattr(self.sock, name)

    listener = UnixListener("unix://" + sys.argv[1], Limits())
    counting = listener._listener = CountingSocket(listener._listener)
    threading.Thread(
        target=listener.serve, daemon=True,
        kwargs=dict(stopping=lambda: False, on_message=lambda c, f, n: listener.send(c, f),
                    on_oversized=lambda c, m: None, on_gone=lambda c: None,
                    on_tick=lambda n: None, tick_s=0.5),
    ).start()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + spare, hard))
    print("ready", flush=True)
    for line in sys.stdin:
        print(counting.accepts, flush=True)
    """
)


def test_out_of_descriptors_the_accept_loop_backs_off_and_recovers(short_dir):
    path = f"{short_dir}/x.sock"
    spare = 3
    server = subprocess.Popen(
        [sys.executable, "-c", _EXHAUSTED_SERVER, path, str(spare)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    peers: list[Peer] = []
    try:
        assert server.stdout.readline().strip() == "ready"

        def accepts() -> int:
            server.stdin.write("count\n")
            server.stdin.flush()
            return int(server.stdout.readline())

        # The first connections use up the descriptors; the rest wait in the backlog.
        peers = [Peer(path, b"peer-%d" % i) for i in range(spare + 4)]
        for index, peer in enumerate(peers[:spare]):
            assert peer.call(n=index) == {"n": index}
        for peer in peers[spare:]:
            peer.send(_message(n=-1))
        time.sleep(0.5)
        before = accepts()
        time.sleep(2.0)
        spent = accepts() - before
        assert spent < 200, f"{spent} accept() calls in 2 s with no descriptor free: spinning"
        # Descriptors come free: the waiting connections are accepted and served.
        for peer in peers[:spare]:
            peer.close()
        for peer in peers[spare:]:
            assert peer.reply(timeout=15) == {"n": -1}
        assert server.poll() is None
    finally:
        for peer in peers:
            peer.close()
        server.kill()
        server.wait(10)
        server.stdin.close()
        server.stdout.close()
