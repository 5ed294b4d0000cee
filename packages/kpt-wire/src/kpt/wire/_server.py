"""Server: one ROUTER socket served by one background thread; handlers run on it, one at a time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from kpt.wire._codec import (
    ERROR_TYPE,
    HEARTBEAT_TYPE,
    Message,
    check_type,
    decode,
    encode,
)
from kpt.wire._errors import HandlerError, ProtocolError
from kpt.wire._limits import Limits
from kpt.wire._security import as_key, check_bind, secure_server
from kpt.wire._sockets import has_input, poll_items, recv_frames, send_frames, wait

log = logging.getLogger("kpt.wire.server")

Reply = None | dict[str, Any] | tuple[dict[str, Any], list[Any]]
Handler = Callable[[Message, bytes], Reply]
_DRAIN_BATCH = 256  # messages handled per wake-up before checking liveness and close again
_LIVENESS_MISSES = 3  # heartbeat intervals of silence after which a client is forgotten


class Server:
    """A kpt.wire server. ``register`` handlers, ``start``, ``close`` (or use ``with``)."""

    def __init__(
        self,
        endpoint: str,
        limits: Limits = Limits(),  # noqa: B008
        heartbeat_interval: float = 1.0,
        on_client_gone: Callable[[bytes], None] | None = None,
        curve_secret_key: str | bytes | None = None,
        curve_public_key: str | bytes | None = None,
        authorized_keys: Any = None,
    ):
        if (curve_secret_key is None) != (curve_public_key is None):
            raise ValueError("pass both curve_secret_key and curve_public_key, or neither")
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0 seconds, got {heartbeat_interval!r}")
        if curve_secret_key is not None:
            curve_secret_key = as_key(curve_secret_key, "curve_secret_key")
            curve_public_key = as_key(curve_public_key, "curve_public_key")
        self._bind_to = check_bind(endpoint, has_keys=curve_secret_key is not None)
        self._limits = limits
        self._interval = float(heartbeat_interval)
        self._on_client_gone = on_client_gone
        self._keys = (curve_secret_key, curve_public_key, authorized_keys)
        self._handlers: dict[str, Handler] = {}
        self._clients: dict[bytes, tuple[float, float]] = {}  # id -> (last seen, window)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # start/close from any thread
        self._context: zmq.Context | None = None
        self._authenticator = None
        self.endpoint: str | None = None

    # -- public ------------------------------------------------------------------------------
    def register(self, type: str, handler: Handler) -> None:
        """Serve messages of ``type`` with ``handler(msg, client_id) -> reply``."""
        check_type(type)
        if type.startswith("_"):
            raise ValueError(f"message type {type!r}: a leading '_' is reserved for the protocol")
        if not callable(handler):
            raise TypeError(f"handler for {type!r} must be callable, got {handler!r}")
        self._handlers[type] = handler

    @property
    def clients(self) -> list[bytes]:
        """Ids of the clients heard from within the liveness window."""
        return list(self._clients)

    def start(self) -> Server:
        """Bind and start serving on a background thread; returns once bound."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("server already started")
            self._context = zmq.Context()
            router = self._context.socket(zmq.ROUTER)
            router.linger = 0
            router.router_mandatory = 1  # a gone client raises instead of silently dropping
            router.router_handover = 1  # a reconnecting client keeps its id
            router.sndhwm = router.rcvhwm = 10_000
            router.maxmsgsize = self._limits.max_message_bytes
            secret, public, authorized = self._keys
            if secret is not None:
                self._authenticator = secure_server(
                    self._context, router, secret, public, authorized
                )
            try:
                router.bind(self._bind_to)
            except zmq.ZMQError as exc:
                router.close(0)
                self._stop_context()
                raise OSError(f"cannot bind {self._bind_to!r}: {exc}") from exc
            self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            wake = self._context.socket(zmq.PAIR)
            wake.bind(f"inproc://kpt-wire-wake-{id(self)}")
            self._wake = self._context.socket(zmq.PAIR)
            self._wake.connect(f"inproc://kpt-wire-wake-{id(self)}")
            self._thread = threading.Thread(
                target=self._serve, args=(router, wake), name=f"kpt-wire-server {self.endpoint}",
                daemon=True,
            )  # fmt: skip
            self._thread.start()
        return self

    def close(self, timeout: float = 5) -> None:
        """Stop the thread (waiting up to ``timeout`` s) and release the socket at once."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._wake.send(b"stop")
            thread.join(timeout)
            self._wake.close(0)
            if thread.is_alive():
                log.warning("server thread did not stop within %.1fs (a handler is stuck)", timeout)
                return
            self._stop_context()

    def __enter__(self) -> Server:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the serving thread ------------------------------------------------------------------
    def _stop_context(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def _serve(self, router: zmq.Socket, wake: zmq.Socket) -> None:
        items = poll_items(router, wake)
        check_every = self._interval / 2
        next_check = time.monotonic() + check_every
        try:
            while True:
                wait_ms = max(0, int((next_check - time.monotonic()) * 1000)) + 1
                events = wait(items, wait_ms)
                if wake in events:
                    return
                if router in events:
                    self._drain(router)
                now = time.monotonic()
                if now >= next_check:
                    self._forget_silent_clients(now)
                    next_check = now + check_every
        finally:
            router.close(0)
            wake.close(0)

    def _drain(self, router: zmq.Socket) -> None:
        for index in range(_DRAIN_BATCH):
            if index and not has_input(router):  # the first one: poll just said it is there
                return
            frames = recv_frames(router, 5, self._limits.max_frames + 1)
            try:
                self._handle(router, frames)
            except Exception:  # the loop must survive anything a message can cause
                log.exception("unexpected failure handling a message; dropped it")

    def _handle(self, router: zmq.Socket, frames: list[Any]) -> None:
        client = frames[0]
        now = time.monotonic()
        seen = self._clients.get(client)
        self._clients[client] = (now, seen[1] if seen else _LIVENESS_MISSES * self._interval)
        try:
            msg = decode(frames[1:], self._limits)
        except ProtocolError as exc:
            log.debug("refused a message from %r: %s", client, exc)
            self._send_error(router, client, exc.request_id or 0, exc.code, exc.message, force=True)
            return
        if msg.type == HEARTBEAT_TYPE:
            self._heartbeat(router, client, msg, now)
            return
        handler = self._handlers.get(msg.type)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            self._send_error(
                router, client, msg.request_id, "unknown_type",
                f"no handler for message type {msg.type!r}; this server handles: {known}",
            )  # fmt: skip
            return
        try:
            reply = handler(msg, client)
            if msg.request_id == 0:
                return  # a cast: the sender waits for nothing
            header, arrays = _split_reply(reply, msg.type)
            frames_out = encode(msg.type, header, arrays, msg.request_id)
        except HandlerError as exc:
            self._send_error(router, client, msg.request_id, exc.code, exc.message, exc.details)
            return
        except Exception as exc:
            log.exception("handler for %r failed", msg.type)
            self._send_error(
                router, client, msg.request_id, "internal",
                f"handler for {msg.type!r} failed: {type(exc).__name__}: {exc}",
            )  # fmt: skip
            return
        self._send(router, client, frames_out)

    def _heartbeat(self, router: zmq.Socket, client: bytes, msg: Message, now: float) -> None:
        declared = msg.header.get("interval")
        if isinstance(declared, int | float) and 0 < declared < 3600:
            window = _LIVENESS_MISSES * max(self._interval, float(declared))
            self._clients[client] = (now, window)
        self._send(router, client, encode(HEARTBEAT_TYPE, {}, (), msg.request_id))

    def _send_error(
        self,
        router: zmq.Socket,
        client: bytes,
        request_id: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        force: bool = False,
    ) -> None:
        if request_id == 0 and not force:
            log.warning("cast failed, nobody to tell: [%s] %s", code, message)
            return
        header = {"code": code, "message": message, "details": details or {}}
        try:
            frames = encode(ERROR_TYPE, header, (), request_id)
        except (TypeError, ValueError):  # details that msgpack cannot carry
            header["details"] = {"repr": repr(details)[:1000]}
            frames = encode(ERROR_TYPE, header, (), request_id)
        self._send(router, client, frames)

    def _send(self, router: zmq.Socket, client: bytes, frames: list[Any]) -> None:
        try:
            send_frames(router, [client, *frames])
        except zmq.Again:
            log.warning("client %r is not reading (queue full); reply dropped", client)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._forget(client)  # it disconnected

    def _forget_silent_clients(self, now: float) -> None:
        gone = [c for c, (seen, window) in self._clients.items() if now - seen > window]
        for client in gone:
            self._forget(client)

    def _forget(self, client: bytes) -> None:
        if self._clients.pop(client, None) is None or self._on_client_gone is None:
            return
        try:
            self._on_client_gone(client)
        except Exception:
            log.exception("on_client_gone(%r) failed", client)


def _split_reply(reply: Reply, type: str) -> tuple[dict[str, Any], list[Any]]:
    if reply is None:
        return {}, []
    if isinstance(reply, dict):
        return reply, []
    if isinstance(reply, tuple) and len(reply) == 2 and isinstance(reply[0], dict):
        return reply[0], list(reply[1])
    raise TypeError(
        f"handler for {type!r} returned {type_name(reply)}; return None, a dict, "
        "or (dict, [arrays])"
    )


def type_name(value: object) -> str:
    return type(value).__name__
