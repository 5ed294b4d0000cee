"""Server: one ROUTER socket (or a unix:// listener) served by one background thread; handlers
run on it, one at a time."""

from __future__ import annotations

import logging
import queue
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
    read_request_id,
)
from kpt.wire._errors import HandlerError, ProtocolError
from kpt.wire._limits import Limits
from kpt.wire._security import as_key, check_bind, secure_server
from kpt.wire._sockets import BLOCK, recv_frames, send_frames
from kpt.wire._stream import Oversized
from kpt.wire._unix import SCHEME as UNIX_SCHEME
from kpt.wire._unix import ListenerBounds, UnixListener, socket_path

log = logging.getLogger("kpt.wire.server")

Reply = None | dict[str, Any] | tuple[dict[str, Any], list[Any]]
Handler = Callable[[Message, bytes], Reply]
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
        handler_thread: bool = False,
        bounds: ListenerBounds = ListenerBounds(),  # noqa: B008
    ):
        """handler_thread: over ZeroMQ, run handlers on a thread of their own, so heartbeats are
        answered and clients heard while a handler computes (a busy server is not a dead one).
        Costs two thread hand-offs per message; unix:// ignores it (a unix:// client is alive
        while its connection stands).

        bounds: what a unix:// listener holds across all its connections (connections, bytes of
        half-sent messages and unread replies, how long a message may take to arrive); ZeroMQ
        endpoints bound per message with ``limits`` and leave the rest to libzmq."""
        if not isinstance(bounds, ListenerBounds):
            raise TypeError(f"bounds must be a kpt.wire.ListenerBounds, got {bounds!r}")
        if (curve_secret_key is None) != (curve_public_key is None):
            raise ValueError("pass both curve_secret_key and curve_public_key, or neither")
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0 seconds, got {heartbeat_interval!r}")
        if curve_secret_key is not None:
            curve_secret_key = as_key(curve_secret_key, "curve_secret_key")
            curve_public_key = as_key(curve_public_key, "curve_public_key")
        if isinstance(endpoint, str) and endpoint.startswith(UNIX_SCHEME):
            socket_path(endpoint)  # ValueError now for a path a Unix socket cannot have
        if isinstance(endpoint, str) and endpoint.startswith(UNIX_SCHEME) and curve_secret_key:
            raise ValueError(
                f"endpoint {endpoint!r}: CURVE keys apply to ZeroMQ endpoints only; a unix:// "
                "socket is guarded by its file permissions (owner only)"
            )
        self._bind_to = check_bind(endpoint, has_keys=curve_secret_key is not None)
        self._limits = limits
        self._bounds = bounds
        self._interval = float(heartbeat_interval)
        self._on_client_gone = on_client_gone
        self._keys = (curve_secret_key, curve_public_key, authorized_keys)
        self._handler_thread = handler_thread
        self._work: queue.SimpleQueue | None = None  # (client, message) for the handler thread
        self._handlers: dict[str, Handler] = {}
        # Per client: when last heard from, and how long a silence means it is gone (kept apart,
        # so the per-message update is one dict store and no tuple).
        self._last_seen: dict[bytes, float] = {}
        self._windows: dict[bytes, float] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # start/close from any thread
        self._context: zmq.Context | None = None
        self._authenticator = None
        self._listener: UnixListener | None = None
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
        """Ids of the clients heard from within the liveness window (unix://: connected)."""
        return list(self._last_seen)

    def start(self) -> Server:
        """Bind and start serving on a background thread; returns once bound."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("server already started")
            if self._bind_to.startswith(UNIX_SCHEME):
                return self._start_unix()
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
            # close() wakes the thread through this in-process endpoint: the thread blocks in
            # recv (cheaper per message than polling a second socket) and cannot watch another.
            self._stop_endpoint = f"inproc://kpt-wire-stop-{id(self)}"
            router.bind(self._stop_endpoint)
            self._stopping = False
            self._thread = threading.Thread(
                target=self._serve_split if self._handler_thread else self._serve, args=(router,),
                name=f"kpt-wire-server {self.endpoint}",
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
            self._stopping = True
            if self._listener is not None:
                self._listener.wake()
                thread.join(timeout)
                if thread.is_alive():
                    log.warning(
                        "server thread did not stop within %.1fs (a handler is stuck)", timeout
                    )
                    return
                self._listener.close()
                self._listener = None
                return
            waker = self._context.socket(zmq.DEALER)
            waker.linger = 0
            waker.connect(self._stop_endpoint)
            try:
                waker.send(b"stop", zmq.NOBLOCK)  # any message: the thread checks _stopping first
            except zmq.Again:
                # Not attached yet (a CURVE router's in-process peer does its handshake first;
                # a loaded machine can be slow to): the thread looks at _stopping every half
                # heartbeat interval anyway, so the wake-up only saves that wait.
                pass
            thread.join(timeout)
            waker.close(0)
            if thread.is_alive():
                log.warning("server thread did not stop within %.1fs (a handler is stuck)", timeout)
                return
            self._stop_context()

    def __enter__(self) -> Server:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start_unix(self) -> Server:
        self._listener = UnixListener(self._bind_to, self._limits, self._bounds)
        self.endpoint = self._bind_to
        self._stopping = False
        self._thread = threading.Thread(
            target=self._serve_unix, name=f"kpt-wire-server {self.endpoint}", daemon=True
        )
        self._thread.start()
        return self

    # -- the serving thread ------------------------------------------------------------------
    def _serve_unix(self) -> None:
        listener = self._listener
        listener.serve(
            stopping=lambda: self._stopping,
            on_message=lambda client, frames, now: self._handle_safely(
                listener, client, frames, now
            ),
            on_oversized=lambda client, message: self._refuse_oversized(listener, client, message),
            on_gone=self._forget,
            # A unix:// client is alive while its connection stands, however long it is silent
            # (idle, or waiting behind a long handler): only a closed connection forgets it.
            on_tick=lambda now: None,
            tick_s=self._interval / 2,
        )

    def _handle_safely(self, transport: Any, client: bytes, frames: list[Any], now: float) -> None:
        try:
            self._handle(transport, [client, *frames], now)
        except Exception:  # the loop must survive anything a message can cause
            log.exception("unexpected failure handling a message; dropped it")

    def _refuse_oversized(self, transport: Any, client: bytes, message: Oversized) -> None:
        self._heard_from(client, time.monotonic())
        self._send_error(
            transport, client, message.request_id or 0, "limit",
            f"message is {message.total} bytes, over the limit of "
            f"{self._limits.max_message_bytes}",
            force=True,
        )  # fmt: skip

    def _stop_context(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def _serve(self, router: zmq.Socket) -> None:
        check_every = self._interval / 2
        # Blocking recv with a timeout, not poll + recv: one call less per message, and the
        # timeout is the liveness check's clock when no message comes.
        router.rcvtimeo = max(1, int(check_every * 1000))
        recv_limit = router.rcvtimeo / 1000
        next_check = time.monotonic() + check_every
        max_frames = self._limits.max_frames + 1  # one over: decode refuses, naming the limit
        try:
            while True:
                before = time.monotonic()
                try:
                    frames = recv_frames(router, 4, max_frames, BLOCK)
                except zmq.Again:
                    frames = None
                if self._stopping:
                    return
                now = time.monotonic()
                # Time this thread could not listen (the process was stopped, or starved)
                # silences nobody: recv returns within its timeout unless we were not running.
                stalled = now - before - recv_limit
                if frames is not None:
                    try:
                        self._handle(router, frames, now)
                    except Exception:  # the loop must survive anything a message can cause
                        log.exception("unexpected failure handling a message; dropped it")
                    done = time.monotonic()
                    stalled = max(stalled, 0.0) + done - now  # a long handler: deaf meanwhile
                    now = done
                if stalled > check_every / 2:
                    self._excuse_silence(stalled)
                if now >= next_check:
                    self._forget_silent_clients(now)
                    next_check = now + check_every
        finally:
            router.close(0)

    def _serve_split(self, router: zmq.Socket) -> None:
        """The I/O thread of handler_thread=True: reads, answers heartbeats, judges liveness and
        forwards replies; the handler thread (_run_handlers) runs everything else in order."""
        replies_endpoint = f"inproc://kpt-wire-replies-{id(self)}"
        replies = self._context.socket(zmq.PULL)
        replies.linger = 0
        replies.bind(replies_endpoint)
        self._work = work = queue.SimpleQueue()
        worker = threading.Thread(
            target=self._run_handlers, args=(work, replies_endpoint),
            name=f"kpt-wire-handlers {self.endpoint}", daemon=True,
        )  # fmt: skip
        worker.start()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(replies, zmq.POLLIN)
        check_every = self._interval / 2
        next_check = time.monotonic() + check_every
        max_frames = self._limits.max_frames + 1
        try:
            while not self._stopping:
                ready = dict(poller.poll(max(1, int(check_every * 1000))))
                if self._stopping:
                    return
                now = time.monotonic()
                while router in ready:
                    try:
                        frames = recv_frames(router, 4, max_frames, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        msg = self._decode(router, frames, now)
                        if msg is None:
                            continue
                        if msg.type == HEARTBEAT_TYPE and msg.type not in self._handlers:
                            self._heartbeat(router, frames[0], msg)
                        else:
                            work.put((frames[0], msg))
                    except Exception:  # the loop must survive anything a message can cause
                        log.exception("unexpected failure reading a message; dropped it")
                while replies in ready:
                    try:
                        out = replies.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._send(router, out[0].bytes, out[1:])
                if now >= next_check:
                    self._forget_silent_clients(now)
                    next_check = now + check_every
        finally:
            work.put(None)
            worker.join(5)
            self._work = None
            replies.close(0)
            router.close(0)

    def _run_handlers(self, work: queue.SimpleQueue, replies_endpoint: str) -> None:
        sink = self._context.socket(zmq.PUSH)
        sink.linger = 0
        sink.connect(replies_endpoint)
        try:
            while (item := work.get()) is not None:
                client, msg = item
                try:
                    if msg is None:  # the I/O thread forgot this client: tell the owner here
                        self._client_gone(client)
                    else:
                        self._dispatch(sink, client, msg)
                except Exception:
                    log.exception("unexpected failure handling a message; dropped it")
        finally:
            sink.close(0)

    def _handle(self, router: zmq.Socket, frames: list[Any], now: float) -> None:
        msg = self._decode(router, frames, now)
        if msg is not None:
            self._dispatch(router, frames[0], msg)

    def _decode(self, router: Any, frames: list[Any], now: float) -> Message | None:
        """The message, or None once a refusal was sent; the sender counts as heard from."""
        client = frames[0]
        self._heard_from(client, now)
        try:
            return decode(frames[1:], self._limits)
        except ProtocolError as exc:
            log.debug("refused a message from %r: %s", client, exc)
            self._send_error(router, client, exc.request_id or 0, exc.code, exc.message, force=True)
        except Exception as exc:  # a decode bug must still be answered, never a silent drop
            log.exception("decoding a message from %r failed", client)
            self._send_error(
                router, client, read_request_id(frames[1:]) or 0, "internal",
                f"the server could not decode this message: {type(exc).__name__}: {exc}",
                force=True,
            )  # fmt: skip
        return None

    def _dispatch(self, router: Any, client: bytes, msg: Message) -> None:
        """Run the message's handler and send its reply (or error) through ``router``."""
        request_id = msg.request_id
        handler = self._handlers.get(msg.type)
        if handler is None:
            if msg.type == HEARTBEAT_TYPE:
                self._heartbeat(router, client, msg)
                return
            known = ", ".join(sorted(self._handlers)) or "none"
            self._send_error(
                router, client, request_id, "unknown_type",
                f"no handler for message type {msg.type!r}; this server handles: {known}",
            )  # fmt: skip
            return
        try:
            reply = handler(msg, client)
            if request_id == 0:
                return  # a cast: the sender waits for nothing
            if reply.__class__ is dict:  # the common reply: a header, no arrays
                frames_out = encode(msg.type, reply, (), request_id)
            else:
                header, arrays = _split_reply(reply, msg.type)
                frames_out = encode(msg.type, header, arrays, request_id)
        except HandlerError as exc:
            self._send_error(router, client, request_id, exc.code, exc.message, exc.details)
            return
        except Exception as exc:
            log.exception("handler for %r failed", msg.type)
            self._send_error(
                router, client, request_id, "internal",
                f"handler for {msg.type!r} failed: {type(exc).__name__}: {exc}",
            )  # fmt: skip
            return
        self._send(router, client, frames_out)

    def _heard_from(self, client: bytes, now: float) -> None:
        if client not in self._windows:
            self._windows[client] = _LIVENESS_MISSES * self._interval
        self._last_seen[client] = now

    def _heartbeat(self, router: zmq.Socket, client: bytes, msg: Message) -> None:
        declared = msg.header.get("interval")
        if isinstance(declared, int | float) and 0 < declared < 3600:
            self._windows[client] = _LIVENESS_MISSES * max(self._interval, float(declared))
        # The limit rides along: ZeroMQ drops a connection whose frame is over maxmsgsize
        # without a word, so a client must know the limit to refuse such a message itself.
        limit = {"max_message_bytes": self._limits.max_message_bytes}
        self._send(router, client, encode(HEARTBEAT_TYPE, limit, (), msg.request_id))

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

    def _send(self, router: Any, client: bytes, frames: list[Any]) -> None:
        """Send ``frames`` to ``client`` through ``router`` (a ROUTER socket or UnixListener)."""
        if router.__class__ is UnixListener:
            router.send(client, frames)  # a client gone meanwhile is reported by on_gone
            return
        if router.type == zmq.PUSH:  # the handler thread: the I/O thread sends it on
            router.send_multipart([client, *frames], copy=False)
            return
        frames.insert(0, client)
        try:
            send_frames(router, frames)
        except zmq.Again:
            log.warning("client %r is not reading (queue full); reply dropped", client)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._forget(client)  # it disconnected

    def _excuse_silence(self, seconds: float) -> None:
        """The server was deaf for `seconds` (computing, or stopped): nobody's silence counts."""
        last_seen = self._last_seen
        for client in last_seen:
            last_seen[client] += seconds

    def _forget_silent_clients(self, now: float) -> None:
        windows = self._windows
        gone = [c for c, seen in self._last_seen.items() if now - seen > windows[c]]
        for client in gone:
            self._forget(client)

    def _forget(self, client: bytes) -> None:
        self._windows.pop(client, None)
        if self._last_seen.pop(client, None) is None or self._on_client_gone is None:
            return
        if self._work is not None:  # handlers run on their own thread: so does the owner's news
            self._work.put((client, None))
        else:
            self._client_gone(client)

    def _client_gone(self, client: bytes) -> None:
        try:
            self._on_client_gone(client)
        except Exception:
            log.exception("on_client_gone(%r) failed", client)


def _split_reply(reply: Reply, type: str) -> tuple[dict[str, Any], list[Any]]:
    if reply is None:
        return {}, []
    if isinstance(reply, dict):
        return reply, []
    if reply.__class__ is tuple and len(reply) == 2 and isinstance(reply[0], dict):
        arrays = reply[1]
        return reply[0], arrays if arrays.__class__ is list else list(arrays)
    raise TypeError(
        f"handler for {type!r} returned {type_name(reply)}; return None, a dict, "
        "or (dict, [arrays])"
    )


def type_name(value: object) -> str:
    return type(value).__name__
