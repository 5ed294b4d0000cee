"""The unix:// transport: the kpt.wire envelope over a Unix stream socket, for same-host peers.

Why it exists: a ZeroMQ round trip hands each message through four threads (caller, its I/O
thread, the peer's I/O thread, the peer). Where a cross-CPU wake-up is dear (small VMs, ~20 us
each on the 2-vCPU machines kpt is developed on) that is most of a small call's cost; a Unix
socket needs two. Same envelope, limits, errors, heartbeats and Client/Server API; only the
framing on the byte stream is new (_stream.py). ZeroMQ stays the transport between hosts.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kpt.wire._channel import ChannelClosed, QueueFull
from kpt.wire._limits import Limits
from kpt.wire._spin import Spinner
from kpt.wire._stream import (
    STREAM_MAGIC,
    Oversized,
    StreamError,
    StreamReader,
    StreamWriter,
    preamble,
)

log = logging.getLogger("kpt.wire.server")

SCHEME = "unix://"
_PATH_MAX = 107  # sockaddr_un.sun_path, less the terminating NUL
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_MAX_QUEUED_BYTES = 1 << 30  # a client not reading its replies past this is dropped


def socket_path(endpoint: str) -> str:
    """The filesystem path of a unix:// endpoint, or ValueError saying what is wrong."""
    path = endpoint[len(SCHEME) :]
    if not endpoint.startswith(SCHEME) or not path.startswith("/"):
        raise ValueError(f"endpoint {endpoint!r}: use unix:///absolute/path.sock")
    if len(os.fsencode(path)) > _PATH_MAX:
        raise ValueError(
            f"endpoint {endpoint!r}: the socket path is {len(os.fsencode(path))} bytes, over the "
            f"{_PATH_MAX} a Unix socket allows; use a shorter directory (e.g. under /tmp)"
        )
    return path


# -- client side --------------------------------------------------------------------------------
class UnixChannel:
    """A client's connection: connects lazily, blocks with timeouts, reads whole messages."""

    def __init__(self, endpoint: str, client_id: bytes, limits: Limits, send_timeout: float):
        self._path = socket_path(endpoint)
        self._endpoint = endpoint
        self._client_id = client_id
        self._limits = limits
        self._send_timeout = send_timeout
        self._sock: socket.socket | None = None
        self._reader: StreamReader | None = None
        self._poller = select.poll()
        self._ready: collections.deque[list[Any]] = collections.deque()
        self._spinner = Spinner()
        try:
            self._connect()
        except ChannelClosed:
            pass  # like ZeroMQ: no error until something is sent; send() tries again

    @property
    def poll_item(self) -> int:
        """What zmq_poll / select watch for input: the socket's descriptor (-1 if none)."""
        return self._sock.fileno() if self._sock is not None else -1

    def send(self, frames: list[Any]) -> None:
        sock = self._sock if self._sock is not None else self._connect()
        writer = StreamWriter(sock, copy=False)  # drained before send() returns
        try:
            if writer.send(frames):
                return
            deadline = time.monotonic() + self._send_timeout
            while not writer.flush():
                left = deadline - time.monotonic()
                if left <= 0:
                    # Half a message is on the stream: the connection cannot be used again.
                    self._drop()
                    raise QueueFull(f"server at {self._endpoint} is not reading")
                self._wait(_POLLOUT, left)
        except OSError as exc:
            raise self._lost(exc) from None

    def recv(self, timeout_s: float) -> list[Any] | None:
        """One message, waiting up to ``timeout_s``; None when none came in time."""
        if self._ready:
            return self._ready.popleft()
        if self._sock is not None and timeout_s > 0 and self._spinner.spin(self._read):
            return self._ready.popleft()
        deadline = time.monotonic() + timeout_s
        while True:
            if self._sock is None:
                time.sleep(max(0.0, min(timeout_s, 0.01)))
                return None
            if self._read():
                return self._ready.popleft()
            left = deadline - time.monotonic()
            if left <= 0 or not self._wait(_POLLIN, left):
                return None

    def has_input(self) -> bool:
        return bool(self._ready) or (self._sock is not None and self._read())

    def close(self) -> None:
        self._drop()

    # -- inside ---------------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._path)
            sock.sendall(preamble(self._client_id))
        except OSError as exc:
            sock.close()
            raise ChannelClosed(
                f"cannot connect to {self._endpoint}: {exc.strerror or exc} (is the server "
                "running, and is this its endpoint?)"
            ) from None
        sock.setblocking(False)
        self._sock, self._reader = sock, StreamReader(self._limits)
        self._poller = select.poll()
        self._poller.register(sock.fileno(), _POLLIN)
        return sock

    def _read(self) -> bool:
        """Read what is there; True if a complete message is ready."""
        try:
            self._ready.extend(self._reader.read(self._sock))
        except (BlockingIOError, InterruptedError):
            pass
        except EOFError:
            raise self._lost(None) from None
        except (OSError, StreamError) as exc:
            raise self._lost(exc) from None
        return bool(self._ready)

    def _wait(self, events: int, timeout_s: float) -> bool:
        if self._sock is None:
            return False
        self._poller.modify(self._sock.fileno(), events)
        try:
            return bool(self._poller.poll(max(1, int(timeout_s * 1000) + 1)))
        finally:
            if events != _POLLIN:
                self._poller.modify(self._sock.fileno(), _POLLIN)

    def _lost(self, exc: BaseException | None) -> ChannelClosed:
        reason = "the server closed the connection" if exc is None else f"{exc}"
        self._drop()
        return ChannelClosed(f"connection to {self._endpoint} lost: {reason}")

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._reader = None, None
        self._ready.clear()


# -- server side --------------------------------------------------------------------------------
class _Connection:
    __slots__ = ("client", "greeting", "reader", "sock", "writer")

    def __init__(self, sock: socket.socket, limits: Limits):
        self.sock = sock
        self.reader = StreamReader(limits)
        self.writer = StreamWriter(sock)
        self.client: bytes | None = None
        self.greeting = b""


class UnixListener:
    """The server's side: accepts, reads every connection without blocking, routes replies.

    ``serve`` runs the loop on the calling thread until ``stopping()``; each complete message goes
    to ``on_message(client_id, frames, now)``, each refused oversized one to
    ``on_oversized(client_id, Oversized)``, a closed connection to ``on_gone(client_id)``, and
    ``on_tick(now)`` runs at least every ``tick_s``.
    """

    def __init__(self, endpoint: str, limits: Limits):
        self._path = socket_path(endpoint)
        self._limits = limits
        _remove_stale_socket(self._path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(self._path)
            os.chmod(self._path, 0o600)  # like a private ipc:// file: this user's processes only
            self._listener.listen(128)
        except OSError as exc:
            self._listener.close()
            raise OSError(f"cannot bind {endpoint!r}: {exc.strerror or exc}") from exc
        self._listener.setblocking(False)
        self.endpoint = endpoint
        self._by_fd: dict[int, _Connection] = {}
        self._by_client: dict[bytes, _Connection] = {}
        self._poller = select.poll()
        self._poller.register(self._listener.fileno(), _POLLIN)
        self._wake_read, self._wake_write = os.pipe()
        self._poller.register(self._wake_read, _POLLIN)
        self._on_gone: Callable[[bytes], None] = lambda client: None

    def wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass

    def send(self, client: bytes, frames: list[Any]) -> bool:
        """Queue a reply for ``client``; False if it is not connected (any more)."""
        connection = self._by_client.get(client)
        if connection is None:
            return False
        try:
            if not connection.writer.send(frames):
                if connection.writer.queued_bytes > _MAX_QUEUED_BYTES:
                    self._close(connection, notify=True)
                    return False
                self._poller.modify(connection.sock.fileno(), _POLLIN | _POLLOUT)
        except OSError:
            self._close(connection, notify=True)
            return False
        return True

    def serve(
        self,
        stopping: Callable[[], bool],
        on_message: Callable[[bytes, list[Any], float], None],
        on_oversized: Callable[[bytes, Oversized], None],
        on_gone: Callable[[bytes], None],
        on_tick: Callable[[float], None],
        tick_s: float,
    ) -> None:
        self._on_gone = on_gone
        tick_ms = max(1, int(tick_s * 1000))
        next_tick = time.monotonic() + tick_s
        spinner, poll = Spinner(), self._poller.poll

        def arrived() -> bool:
            return bool(poll(0))

        ready: list = []
        while not stopping():
            # Just served something: more is likely on its way, so spin for it a moment.
            if ready and spinner.spin(arrived):
                ready = poll(0)
            else:
                ready = poll(tick_ms)
            for fd, events in ready:
                if stopping():
                    return
                if fd == self._listener.fileno():
                    self._accept()
                elif fd == self._wake_read:
                    os.read(self._wake_read, 4096)
                else:
                    connection = self._by_fd.get(fd)
                    if connection is None:
                        continue
                    try:
                        self._service(connection, events, on_message, on_oversized)
                    except Exception:  # a bug must cost one connection, never the server
                        log.exception("unexpected failure serving a connection; closed it")
                        self._close(connection, notify=True)
            now = time.monotonic()
            if now >= next_tick:
                on_tick(now)
                next_tick = now + tick_s

    def close(self) -> None:
        for connection in list(self._by_fd.values()):
            connection.sock.close()
        self._by_fd.clear()
        self._by_client.clear()
        self._listener.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        try:
            os.unlink(self._path)
        except OSError:
            pass

    # -- inside ---------------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors and the like: the listener itself is fine
                return
            sock.setblocking(False)
            connection = _Connection(sock, self._limits)
            self._by_fd[sock.fileno()] = connection
            self._poller.register(sock.fileno(), _POLLIN)

    def _service(self, connection: _Connection, events: int, on_message, on_oversized) -> None:
        if events & _POLLOUT:
            try:
                if connection.writer.flush():
                    self._poller.modify(connection.sock.fileno(), _POLLIN)
            except OSError:
                self._close(connection, notify=True)
                return
        if not events & (_POLLIN | select.POLLHUP | select.POLLERR):
            return
        try:
            if connection.client is None:
                self._greet(connection)
                return
            messages = connection.reader.read(connection.sock)
        except (BlockingIOError, InterruptedError):
            return
        except (EOFError, OSError, StreamError):
            self._close(connection, notify=connection.client is not None)
            return
        now = time.monotonic()
        for message in messages:
            if message.__class__ is Oversized:
                on_oversized(connection.client, message)
            else:
                on_message(connection.client, message, now)

    def _greet(self, connection: _Connection) -> None:
        """Read the client's preamble (magic, id length, id) and not a byte more."""
        greeting = connection.greeting
        fixed = len(STREAM_MAGIC) + 1
        want = fixed if len(greeting) < fixed else fixed + greeting[len(STREAM_MAGIC)]
        data = connection.sock.recv(want - len(greeting))
        if not data:
            raise EOFError
        greeting = connection.greeting = greeting + data
        if greeting[: len(STREAM_MAGIC)] != STREAM_MAGIC[: len(greeting)]:
            raise StreamError("not a kpt.wire unix:// client")
        if len(greeting) < fixed or len(greeting) < fixed + greeting[len(STREAM_MAGIC)]:
            return
        client = bytes(greeting[fixed:])
        if not client:
            raise StreamError("empty client id")
        previous = self._by_client.get(client)
        if previous is not None:  # the same client reconnected: its old connection is dead
            self._close(previous, notify=False)
        connection.client = client
        self._by_client[client] = connection

    def _close(self, connection: _Connection, notify: bool) -> None:
        fd = connection.sock.fileno()
        if fd >= 0:
            self._poller.unregister(fd)
            self._by_fd.pop(fd, None)
        connection.sock.close()
        client = connection.client
        if client is not None and self._by_client.get(client) is connection:
            del self._by_client[client]
            if notify:
                self._on_gone(client)


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on (left by a killed server); refuse anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"cannot bind unix://{path}: a file that is not a socket is in the way")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody home: stale
        return
    finally:
        probe.close()
    raise OSError(f"cannot bind unix://{path}: another server is listening there")
