"""The unix:// transport: the kpt.wire envelope over a Unix stream socket, for same-host peers.

Why it exists: a ZeroMQ round trip hands each message through four threads (caller, its I/O
thread, the peer's I/O thread, the peer). Where a cross-CPU wake-up is dear (small VMs, ~20 us
each on the 2-vCPU machines kpt is developed on) that is most of a small call's cost; a Unix
socket needs two. Same envelope, limits, errors, heartbeats and Client/Server API; only the
framing on the byte stream is new (_stream.py). ZeroMQ stays the transport between hosts.

This module is the server's side (UnixListener); the client's is _unix_channel.py, the bounds
the listener keeps are _unix_bounds.py. Both sides' names are importable from here.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kpt.wire._limits import Limits
from kpt.wire._spin import Spinner
from kpt.wire._stream import (
    STREAM_MAGIC,
    Oversized,
    StreamError,
    StreamReader,
    StreamWriter,
)
from kpt.wire._unix_bounds import (
    OUT_OF_RESOURCES,
    AcceptBackoff,
    Holdings,
    ListenerBounds,
    RefusalLog,
)
from kpt.wire._unix_channel import SCHEME, UnixChannel, socket_path

log = logging.getLogger("kpt.wire.server")
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
__all__ = ["SCHEME", "ListenerBounds", "UnixChannel", "UnixListener", "socket_path"]

_ACCEPTS_PER_WAKE = 64  # a connect flood must not starve connections already open
_HOUSEKEEPING_S = 0.5  # how often deadlines are looked at, at least
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_DEAF_AFTER_S = 0.01  # time this thread spends away from poll beyond this does not count


class _Connection:
    __slots__ = (
        "client", "fd", "greeting", "held", "paused", "pid", "queued", "reader", "since",
        "sock", "writer",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, limits: Limits):
        self.sock = sock
        self.fd = sock.fileno()  # kept: fileno() is -1 once the socket is closed
        self.pid = _peer_pid(sock)  # the connecting process, as the kernel saw it
        self.reader = StreamReader(limits)
        self.writer = StreamWriter(sock)
        self.client: bytes | None = None
        self.greeting = b""
        # Since when (listening time) a message -- or, before it, the greeting -- has been
        # incomplete; None while the connection sits between messages.
        self.since: float | None = None
        self.held = 0  # reader.held_bytes when last counted
        self.queued = 0  # writer.queued_bytes when last counted
        self.paused = False  # not read while other partial messages use up the byte bound


class UnixListener:
    """The server's side: accepts, reads every connection without blocking, routes replies.

    ``serve`` runs the loop on the calling thread until ``stopping()``; each complete message goes
    to ``on_message(client_id, frames, now)``, each refused oversized one to
    ``on_oversized(client_id, Oversized)``, a closed connection to ``on_gone(client_id)``, and
    ``on_tick(now)`` runs at least every ``tick_s``. ``bounds`` caps what all connections
    together may hold (see _unix_bounds.py).
    """

    def __init__(self, endpoint: str, limits: Limits, bounds: ListenerBounds = ListenerBounds()):  # noqa: B008
        self._path = socket_path(endpoint)
        self._limits = limits
        self._bounds = bounds
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
        self._holdings = Holdings(bounds)
        # Seconds this thread did not listen (in handlers, or the process stopped): deadlines
        # run on listening time, so a sender is never blamed for the server's own deafness.
        self._deaf_s = 0.0
        self._backoff = AcceptBackoff(endpoint)
        self._refusals = RefusalLog(endpoint, bounds.max_connections)

    # -- what it holds (for tests, benchmarks and logs) -------------------------------------------
    @property
    def connection_count(self) -> int:
        return len(self._by_fd)

    @property
    def partial_bytes(self) -> int:
        """Bytes held for messages begun and not complete, over all connections."""
        return self._holdings.partial_bytes

    @property
    def queued_bytes(self) -> int:
        """Bytes of replies waiting for clients to read them, over all connections."""
        return self._holdings.queued_bytes

    @property
    def refused_connections(self) -> int:
        return self._refusals.refused

    @property
    def accept_failures(self) -> int:
        """accept() calls that failed for want of descriptors or memory."""
        return self._backoff.failures

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
            if not connection.writer.send(frames) or connection.queued:
                return self._count_queued(connection)
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
        housekeeping_s = min(tick_s, _HOUSEKEEPING_S)
        wait_ms = max(1, int(housekeeping_s * 1000))
        monotonic, listener_fd, wake_fd = time.monotonic, self._listener.fileno(), self._wake_read
        now = monotonic()
        next_tick = now + tick_s
        next_housekeeping = now + housekeeping_s
        spinner, poll = Spinner(), self._poller.poll

        def arrived() -> bool:
            return bool(poll(0))

        ready: list = []
        while not stopping():
            # Just served something: more is likely on its way, so spin for it a moment.
            if ready and spinner.spin(arrived):
                ready = poll(0)
                polled = monotonic()
            else:
                timeout_ms = wait_ms
                resume_at = self._backoff.resume_at
                if resume_at is not None:
                    timeout_ms = max(0, min(wait_ms, int((resume_at - now) * 1000) + 1))
                ready = poll(timeout_ms)
                polled = monotonic()
                # Past the timeout (or on_tick/housekeeping ran long): nobody could be read.
                late = polled - now - timeout_ms / 1000
                if late > _DEAF_AFTER_S:
                    self._deaf_s += late
                if resume_at is not None and polled >= resume_at:
                    self._backoff.resume_at = None
                    self._poller.register(listener_fd, _POLLIN)
            for fd, events in ready:
                if stopping():
                    return
                if fd == listener_fd:
                    self._accept(polled)
                elif fd == wake_fd:
                    os.read(wake_fd, 4096)
                else:
                    connection = self._by_fd.get(fd)
                    if connection is None:
                        continue
                    try:
                        self._service(connection, events, on_message, on_oversized)
                    except Exception:  # a bug must cost one connection, never the server
                        log.exception("unexpected failure serving a connection; closed it")
                        self._close(connection, notify=True)
            now = monotonic()
            if now - polled > _DEAF_AFTER_S:  # handlers ran long: nobody could be read meanwhile
                self._deaf_s += now - polled
            if now >= next_tick:
                on_tick(now)
                next_tick = now + tick_s
            if now >= next_housekeeping:
                self._housekeep(now)
                next_housekeeping = now + housekeeping_s

    def close(self) -> None:
        for connection in list(self._by_fd.values()):
            connection.sock.close()
            connection.reader.release()
            connection.writer.release()
        self._by_fd.clear()
        self._by_client.clear()
        self._holdings = Holdings(self._bounds)
        self._listener.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        try:
            os.unlink(self._path)
        except OSError:
            pass

    # -- inside ---------------------------------------------------------------------------------
    def _accept(self, now: float) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    # The connection waits in the backlog, so the socket stays readable: stop
                    # watching it for a while, or poll would return at once, again and again.
                    self._poller.unregister(self._listener.fileno())
                    self._backoff.failed(exc, now, len(self._by_fd))
                    return
                log.warning("accept on %s failed: %s; going on", self.endpoint, exc)
                continue  # e.g. ECONNABORTED: that connection is gone, others may wait
            self._backoff.succeeded()
            if len(self._by_fd) >= self._bounds.max_connections:
                sock.close()  # at once: an idle connection over the bound must hold nothing
                self._refusals.refused_one(now)
                continue
            sock.setblocking(False)
            connection = _Connection(sock, self._limits)
            self._by_fd[connection.fd] = connection
            self._holdings.began(connection, now - self._deaf_s)  # the greeting has a deadline
            self._poller.register(connection.fd, _POLLIN)

    def _service(self, connection: _Connection, events: int, on_message, on_oversized) -> None:
        if events & _POLLOUT:
            try:
                connection.writer.flush()
            except OSError:
                self._close(connection, notify=True)
                return
            if not self._count_queued(connection):
                return
        if not events & (_POLLIN | select.POLLHUP | select.POLLERR):
            return
        reader = connection.reader
        try:
            if connection.client is None:
                self._greet(connection)
                return
            messages = reader.read(connection.sock, self._holdings.read_limit())
        except (BlockingIOError, InterruptedError):
            return
        except (EOFError, OSError, StreamError):
            self._close(connection, notify=connection.client is not None)
            return
        now = time.monotonic()
        if connection.since is not None or reader.mid_message:
            clock = now - self._deaf_s
            self._rewatch(self._holdings.after_read(connection, bool(messages), clock))
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
        if previous is not None:
            if previous.pid != connection.pid:
                # A client's id names its memory on the server: while its connection stands,
                # no other process may take it over by presenting the same id.
                log.warning(
                    "refused a connection from pid %s presenting client id %r, which pid %s "
                    "holds", connection.pid, client, previous.pid,
                )  # fmt: skip
                raise StreamError(f"client id {client!r} is in use by another process")
            self._close(previous, notify=False)  # the same client reconnected: the old is dead
        connection.client = client
        connection.greeting = b""
        self._holdings.greeted(connection)
        self._by_client[client] = connection

    # -- bounds (decided by Holdings, done here) ------------------------------------------------
    def _count_queued(self, connection: _Connection) -> bool:
        """After a send or flush: account queued replies; False if the connection was dropped."""
        drop = self._holdings.after_queue(connection)
        if drop is not None:
            self._close(drop, notify=True)
            if drop is connection:
                return False
        self._watch(connection)
        return True

    def _rewatch(self, connections: list[_Connection]) -> None:
        for connection in connections:
            if self._by_fd.get(connection.fd) is connection:
                self._watch(connection)

    def _watch(self, connection: _Connection) -> None:
        events = 0 if connection.paused else _POLLIN
        if connection.queued:
            events |= _POLLOUT
        self._poller.modify(connection.fd, events)

    def _housekeep(self, now: float) -> None:
        self._refusals.tick(now)
        clock = now - self._deaf_s
        for connection in self._holdings.late(clock):
            if _readable(connection.fd):
                continue  # its bytes are here, unread: the delay is ours; read them first
            what = "its greeting" if connection.client is None else "a message"
            log.warning(
                "dropped client %r: %s begun %.1f s ago is still incomplete (%d bytes held); a "
                "sender must finish a message within %.1f s (ListenerBounds."
                "partial_message_timeout_s)", connection.client, what, clock - connection.since,
                connection.held, self._bounds.partial_message_timeout_s,
            )  # fmt: skip
            self._close(connection, notify=connection.client is not None)

    def _close(self, connection: _Connection, notify: bool) -> None:
        if self._by_fd.get(connection.fd) is connection:
            del self._by_fd[connection.fd]
            self._poller.unregister(connection.fd)
        # Everything it held goes now, even if something still refers to the connection.
        self._rewatch(self._holdings.forget(connection, time.monotonic() - self._deaf_s))
        connection.sock.close()
        client = connection.client
        if client is not None and self._by_client.get(client) is connection:
            del self._by_client[client]
            if notify:
                self._on_gone(client)


def _peer_pid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):  # not Linux
        return None
    return _UCRED.unpack(creds)[0]


def _readable(fd: int) -> bool:
    probe = select.poll()
    probe.register(fd, _POLLIN)
    return bool(probe.poll(0))


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
