"""A client's connection to its server, whatever carries it: ZeroMQ or a Unix stream socket.

The Client drives a Channel (send, recv with a timeout, has_input, close) and polls its
``poll_item``; both transports raise the same two exceptions, so the Client has one code path.
"""

from __future__ import annotations

from typing import Any, Protocol

import zmq

from kpt.wire._limits import Limits
from kpt.wire._security import secure_client
from kpt.wire._sockets import BLOCK, has_input, recv_frames, send_frames


class ChannelClosed(Exception):
    """The connection is gone (peer closed or reset, or never reachable); the text says why."""


class QueueFull(Exception):
    """The server has not taken what was sent for too long."""


class Channel(Protocol):
    poll_item: Any  # what zmq_poll watches for input: a zmq socket or a file descriptor

    def send(self, frames: list[Any]) -> None: ...
    def recv(self, timeout_s: float) -> list[Any] | None: ...
    def has_input(self) -> bool: ...
    def close(self) -> None: ...


class ZmqChannel:
    """A DEALER socket. Sends never block (QueueFull past the high-water mark)."""

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        client_id: bytes,
        limits: Limits,
        curve: tuple[Any, Any, Any],
    ):
        socket = context.socket(zmq.DEALER)
        socket.linger = 0
        socket.routing_id = client_id
        socket.sndhwm = socket.rcvhwm = 10_000
        socket.maxmsgsize = limits.max_message_bytes
        server_key, public, secret = curve
        if server_key is not None:
            secure_client(socket, server_key, public, secret)
        socket.connect(endpoint)
        self.poll_item = self._socket = socket
        self._max_frames = limits.max_frames
        self._rcvtimeo = -1  # the socket's RCVTIMEO now; set only when it must change

    def send(self, frames: list[Any]) -> None:
        try:
            send_frames(self._socket, frames)
        except zmq.Again:
            raise QueueFull("send queue full") from None

    def recv(self, timeout_s: float) -> list[Any] | None:
        if timeout_s <= 0:  # what is already here: no RCVTIMEO change on this path
            try:
                return recv_frames(self._socket, 3, self._max_frames)
            except zmq.Again:
                return None
        timeout_ms = max(1, int(timeout_s * 1000))
        if timeout_ms != self._rcvtimeo:
            self._socket.rcvtimeo = self._rcvtimeo = timeout_ms
        try:
            return recv_frames(self._socket, 3, self._max_frames, BLOCK)
        except zmq.Again:
            return None

    def has_input(self) -> bool:
        return has_input(self._socket)

    def close(self) -> None:
        self._socket.close(0)
