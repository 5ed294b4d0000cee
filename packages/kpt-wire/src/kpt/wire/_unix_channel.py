"""The unix:// transport's client side: a connection that connects lazily, blocks with timeouts
and reads whole messages; and the endpoint's path. The server side is _unix.py."""

from __future__ import annotations

import collections
import os
import select
import socket
import time
from typing import Any

from kpt.wire._channel import ChannelClosed, QueueFull
from kpt.wire._limits import Limits
from kpt.wire._spin import Spinner
from kpt.wire._stream import StreamError, StreamReader, StreamWriter, preamble

SCHEME = "unix://"
_PATH_MAX = 107  # sockaddr_un.sun_path, less the terminating NUL
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


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
        # One per connection, kept: each send() drains it before returning (or drops the
        # connection), so it is empty between sends.
        self._writer: StreamWriter | None = None
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
        if self._sock is None:
            self._connect()
        writer = self._writer
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
        self._writer = StreamWriter(sock, copy=False)  # drained before send() returns
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
        self._sock, self._reader, self._writer = None, None, None
        self._ready.clear()
