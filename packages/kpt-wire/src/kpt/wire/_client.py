"""Client: one connection (a ZeroMQ DEALER socket, or a unix:// stream) that many threads share.

No dedicated I/O thread sits between a caller and the socket: whichever caller finds the socket
free "drives" it (sends what is queued, polls, hands replies to their waiters), so a lone caller
pays no thread hand-off. Callers that find it busy queue their frames, poke the driver through a
pipe, and wait. A driver with only its own call in flight blocks in recv rather than polling the
socket and the pipe (cheaper per call); it looks at the queue again at least every
``_BLOCK_SLICE``. A keeper thread sends heartbeats while idle and drives for call_async futures.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

from kpt.wire._calls import Call, InFlight
from kpt.wire._channel import Channel, ChannelClosed, QueueFull, ZmqChannel
from kpt.wire._codec import (
    ERROR_TYPE,
    HEARTBEAT_TYPE,
    Message,
    decode,
    encode,
    read_request_id,
)
from kpt.wire._errors import CallTimeout, ProtocolError, TransportError
from kpt.wire._limits import Limits
from kpt.wire._security import as_key
from kpt.wire._sockets import poll_items, shared_context, wait
from kpt.wire._unix import SCHEME as UNIX_SCHEME
from kpt.wire._unix import UnixChannel, socket_path

_LIVENESS_MISSES = 3
_BACKOFF_START = 0.05
_BACKOFF_CAP = 2.0
# A lone caller blocks in recv instead of polling the socket and the wake pipe (one call less
# per reply). Threads that queue frames meanwhile wait at most this long for it to look up.
_BLOCK_SLICE = 0.01
# Calls with less time than this left skip the fast path (its first wait is one whole slice),
# and so does a client whose heartbeat interval is shorter (its heartbeats could be late).
_FAST_PATH_MIN_WAIT = 2 * _BLOCK_SLICE


class Client:
    """A thread-safe kpt.wire client. ``call``/``cast``/``call_async``; ``close`` when done."""

    def __init__(
        self,
        endpoint: str,
        timeout: float = 10.0,
        heartbeat_interval: float = 1.0,
        retries: int = 3,
        curve_server_key: str | bytes | None = None,
        curve_public_key: str | bytes | None = None,
        curve_secret_key: str | bytes | None = None,
        limits: Limits = Limits(),  # noqa: B008
    ):
        if not isinstance(endpoint, str) or "://" not in endpoint:
            raise ValueError(
                f"endpoint {endpoint!r} is invalid; use the server's .endpoint, e.g. "
                "'ipc:///tmp/x.sock' or 'tcp://127.0.0.1:5555'"
            )
        if not heartbeat_interval > 0 or not timeout > 0:
            raise ValueError(
                f"timeout ({timeout!r}) and heartbeat_interval ({heartbeat_interval!r}) "
                "must be > 0 seconds"
            )
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.retries = retries
        self._interval = float(heartbeat_interval)
        # With heartbeats more often than the fast path's wait, always take the careful path.
        fast = self._interval > _FAST_PATH_MIN_WAIT
        self._fast_path_min_wait = _FAST_PATH_MIN_WAIT if fast else float("inf")
        self._limits = limits
        if curve_server_key is not None:
            as_key(curve_server_key, "curve_server_key")
        if (curve_public_key is None) != (curve_secret_key is None):
            raise ValueError("pass both curve_public_key and curve_secret_key, or neither")
        self._unix = endpoint.startswith(UNIX_SCHEME)
        if self._unix:
            socket_path(endpoint)  # ValueError now for a path a Unix socket cannot have
            if curve_server_key is not None or curve_public_key is not None:
                raise ValueError(
                    f"endpoint {endpoint!r}: CURVE keys apply to ZeroMQ endpoints only; a unix:// "
                    "socket is guarded by its file permissions (owner only)"
                )
        self._curve = (curve_server_key, curve_public_key, curve_secret_key)
        self.client_id = b"kpt-" + os.urandom(12)  # kept across reconnects: servers see one client
        self._context = None if self._unix else shared_context()  # unix:// needs no I/O thread
        self._ids = itertools.count(1)
        self._in_flight = InFlight(endpoint)
        self._pending = self._in_flight.calls  # the same dict: the fast path's one lookup
        self._outbox: collections.deque[list[Any]] = collections.deque()
        self._drive_lock = threading.Lock()  # whoever holds it owns the socket
        self._done = threading.Condition()  # notified when replies landed or the driver left
        self._waiting = 0  # threads blocked on _done: notify only when someone listens
        # A poke (a byte down the wake pipe) wakes the driver only while it sleeps in poll() on
        # the pipe (_polling); a driver in recv or between calls sends queued work when it
        # lets go of the socket (_release), so a poke then would be a wasted syscall.
        self._polling = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        weakref.finalize(self, _close_fds, self._wake_read, self._wake_write)
        self._closed = False
        self._busy_since = 0.0  # when the client last started waiting for a reply
        self._heartbeat_frames = encode(HEARTBEAT_TYPE, {"interval": self._interval}, (), 0)
        self._channel: Channel = self._connect()
        self._keeper_kick = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="kpt-wire-client", daemon=True)
        self._keeper.start()

    # -- public ------------------------------------------------------------------------------
    def call(
        self,
        type: str,
        header: Mapping[str, Any] | None = None,
        arrays: Iterable[Any] = (),
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> Message:
        """Send a request and wait for its reply; RemoteError, TransportError, CallTimeout.

        Only an ``idempotent`` call is re-sent after a transport failure (up to ``retries``
        times, capped exponential backoff); ``timeout`` bounds each attempt.
        """
        if not idempotent or not self.retries:
            return self._call_once(type, header, arrays, timeout)
        arrays = list(arrays)  # sent again on a retry: an iterator would be empty then
        attempts = 1 + self.retries
        for attempt in range(attempts):
            call = self._submit(type, header, arrays, timeout, is_async=False)
            try:
                return self._wait(call)
            except TransportError:
                if attempt + 1 == attempts or self._closed:
                    raise
            time.sleep(min(_BACKOFF_CAP, _BACKOFF_START * 2**attempt))
        raise AssertionError("unreachable")

    def call_async(
        self,
        type: str,
        header: Mapping[str, Any] | None = None,
        arrays: Iterable[Any] = (),
        timeout: float | None = None,
    ) -> Future:
        """Send a request; a Future resolving to the reply Message (or its error)."""
        call = self._submit(type, header, arrays, timeout, is_async=True)
        self._flush_if_free()
        self._keeper_kick.set()
        return call.future  # type: ignore[return-value]

    def cast(
        self, type: str, header: Mapping[str, Any] | None = None, arrays: Iterable[Any] = ()
    ) -> None:
        """Send a one-way message: no reply, returns at once (queued if the server is away)."""
        self._check_open()
        frames = encode(type, header, arrays, 0)
        if not self._unix:
            self._in_flight.refuse_oversized(type, max(map(len, frames)))
        self._outbox.append(frames)
        self._flush_if_free()

    def close(self) -> None:
        """Fail what is pending with TransportError and release the socket (linger 0)."""
        if self._closed:
            return
        self._closed = True
        self._keeper_kick.set()
        self._poke()
        self._keeper.join(5)
        with self._drive_lock:
            self._fail_all(TransportError(f"client of {self.endpoint} closed"))
            self._channel.close()
        # The wake pipe stays open until this object is collected: a thread still poking it
        # after close() must never write into a file that reused the descriptor number.

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- submitting and waiting ----------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"client of {self.endpoint} is closed")

    def _new_call(
        self, type: str, header: Any, arrays: Iterable[Any], timeout: float | None, future: Any
    ) -> tuple[Call, list[Any], float]:
        """A request's call, its frames and the time now; refuses reserved types and closed."""
        if self._closed:
            self._check_open()
        if type.__class__ is str and type[:1] == "_":
            raise ValueError(f"message type {type!r}: a leading '_' is reserved for the protocol")
        request_id = next(self._ids)
        frames = encode(type, header, arrays, request_id)
        largest = 0
        if not self._unix:
            largest = max(map(len, frames))
            self._in_flight.refuse_oversized(type, largest)
        now = time.monotonic()
        deadline = now + (self.timeout if timeout is None else timeout)
        return Call(request_id, deadline, type, future, largest), frames, now

    def _submit(
        self, type: str, header: Any, arrays: Iterable[Any], timeout: float | None, is_async: bool
    ) -> Call:
        call, frames, now = self._new_call(
            type, header, arrays, timeout, Future() if is_async else None
        )
        if not self._pending:
            self._busy_since = now
        self._in_flight.add(call, is_async)
        self._outbox.append(frames)
        return call

    def _call_once(
        self, type: str, header: Any, arrays: Iterable[Any], timeout: float | None
    ) -> Message:
        """One attempt. The common case, a lone caller, sends and receives right here."""
        call, frames, now = self._new_call(type, header, arrays, timeout, None)
        request_id, deadline = call.request_id, call.deadline
        pending = self._pending
        if pending:
            pending[request_id] = call
            self._outbox.append(frames)
        else:
            self._busy_since = now
            pending[request_id] = call
            if (
                deadline - now > self._fast_path_min_wait
                and not self._outbox
                and not self._waiting
                and self._drive_lock.acquire(blocking=False)
            ):
                try:
                    self._exchange(call, frames, now)
                finally:
                    self._release()
                if call.reply is not None:
                    return call.reply
            else:
                self._outbox.append(frames)
        return self._wait(call)

    def _exchange(self, call: Call, frames: list[Any], now: float) -> None:
        """Send ``frames`` and wait once in recv for the reply (drive lock held, nothing else in
        flight). Whatever this leaves undone (a slow reply, an error) ``_wait`` finishes."""
        if not self._send(frames):
            return
        try:
            received = self._channel.recv(_BLOCK_SLICE)
        except ChannelClosed as exc:
            self._lost(exc)
            return
        if received is None:
            return
        self._last_recv = time.monotonic()
        try:
            msg = decode(received, self._limits)
        except ProtocolError as exc:
            landed = self._in_flight.deliver_error(exc)
        else:
            if msg.request_id == call.request_id and msg.type != ERROR_TYPE:
                del self._pending[call.request_id]
                call.reply = msg  # the usual ending: no other call or waiter to tell
                return
            landed = self._deliver(msg)
        if landed:
            self._notify()

    def _wait(self, call: Call) -> Message:
        try:
            while not call.done():
                self._check_open()
                if time.monotonic() >= call.deadline:
                    call.fail(
                        self._in_flight.oversized_instead(call)
                        or CallTimeout(
                            f"no reply to {call.what!r} (request {call.request_id}) from "
                            f"{self.endpoint} within the timeout (server alive but slow); "
                            "raise timeout= or check the handler"
                        )
                    )
                    break
                if self._drive_lock.acquire(blocking=False):
                    try:
                        self._drive(call.done, call.deadline)
                    finally:
                        self._release()
                else:
                    self._poke_if_polling()  # the driver sends what we queued
                    with self._done:
                        if not call.done() and self._drive_lock.locked():
                            self._waiting += 1
                            self._done.wait(0.05)
                            self._waiting -= 1
        finally:
            self._pending.pop(call.request_id, None)
        if call.error is not None:
            raise call.error
        return call.reply  # type: ignore[return-value]

    def _notify(self) -> None:
        if self._waiting:
            with self._done:
                self._done.notify_all()

    def _release(self) -> None:
        """Let go of the socket, then send what other threads queued meanwhile (they poke only
        a driver asleep in poll()). A message queued after the outbox check finds the lock free
        and goes at once, or held by a thread that checks again on its own release."""
        while True:
            self._drive_lock.release()
            self._notify()  # a waiter may take over driving
            if not self._outbox or not self._drive_lock.acquire(blocking=False):
                return
            try:
                self._flush()
            except BaseException:
                self._drive_lock.release()
                raise

    def _flush_if_free(self) -> None:
        if self._drive_lock.acquire(blocking=False):
            try:
                self._flush()
            finally:
                self._release()
        else:
            self._poke_if_polling()

    def _poke_if_polling(self) -> None:
        if self._polling:
            self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except (BlockingIOError, OSError):
            pass  # pipe full (driver already has a wake-up queued) or closed

    # -- driving the socket (only with _drive_lock held) ---------------------------------------
    def _connect(self) -> Channel:
        if self._unix:
            channel: Channel = UnixChannel(
                self.endpoint, self.client_id, self._limits, send_timeout=self.timeout
            )
        else:
            channel = ZmqChannel(
                self._context, self.endpoint, self.client_id, self._limits, self._curve
            )
            try:  # at once, not after an interval: the answer declares the server's limit
                channel.send(self._heartbeat_frames)
            except QueueFull:
                pass  # the regular heartbeat follows
        self._last_recv = self._last_send = time.monotonic()
        return channel

    def _drive(self, stop: Callable[[], bool], until: float) -> None:
        window = _LIVENESS_MISSES * self._interval
        while not stop() and not self._closed:
            if self._outbox:
                self._flush()
            now = time.monotonic()
            if self._in_flight.deadlines:
                self._in_flight.expire(now)
            if now >= until or stop():
                return
            if now - self._last_send >= self._interval:
                self._send(self._heartbeat_frames)
            silence = now - max(self._last_recv, self._busy_since)
            if self._pending and silence > window:
                self._reconnect(
                    f"no traffic from {self.endpoint} for {silence:.1f}s "
                    f"({_LIVENESS_MISSES} heartbeat intervals): server dead or unreachable"
                )
                return
            wait_s = min(until, self._last_send + self._interval, now + window - silence) - now
            if len(self._pending) == 1 and not self._waiting and not self._outbox:
                self._receive_one(wait_s)
                continue
            channel = self._channel
            if self._has_input():  # a stream may hold whole messages already read
                self._receive()
                continue
            items = poll_items(self._wake_read, channel.poll_item)
            if channel.poll_item == -1:  # a unix:// channel between connections
                items.pop()
            self._polling = True  # from here a thread that queues pokes; before, we look
            if self._outbox:
                self._polling = False
                continue
            try:
                ready_items = wait(items, max(0.0, wait_s) * 1000 + 1)
            finally:
                self._polling = False
            for ready in ready_items:
                if ready is not self._wake_read:
                    self._receive()
                else:
                    try:
                        os.read(self._wake_read, 4096)
                    except BlockingIOError:
                        pass

    def _flush(self) -> None:
        while self._outbox:
            self._send(self._outbox.popleft())

    def _send(self, frames: list[Any]) -> bool:
        """Send one message; False (and its call failed) if it could not go."""
        try:
            self._channel.send(frames)
        except QueueFull:
            call = self._pending.pop(read_request_id(frames) or -1, None)
            if call is not None:
                call.fail(TransportError(f"send queue to {self.endpoint} full; server not reading"))
            return False
        except ChannelClosed as exc:
            self._lost(exc)
            return False
        except ValueError as exc:  # a message this transport cannot carry: its caller hears why
            call = self._pending.pop(read_request_id(frames) or -1, None)
            if call is not None:
                call.fail(exc)
            return False
        self._last_send = time.monotonic()
        return True

    def _receive_one(self, wait_s: float) -> None:
        """Wait in recv (at most ``wait_s``, capped at _BLOCK_SLICE) for one message."""
        try:
            frames = self._channel.recv(min(_BLOCK_SLICE, max(wait_s, 0.0) + 0.001))
        except ChannelClosed as exc:
            self._lost(exc)
            return
        if frames is None:
            return
        self._last_recv = time.monotonic()
        if self._dispatch(frames):
            self._notify()

    def _has_input(self) -> bool:
        try:
            return self._channel.has_input()
        except ChannelClosed as exc:
            self._lost(exc)
            return False

    def _receive(self) -> None:
        """Hand every waiting reply to its call."""
        landed = False
        while self._has_input():
            frames = self._channel.recv(0.0)
            if frames is None:
                break
            self._last_recv = time.monotonic()
            landed = self._dispatch(frames) or landed
        if landed:
            self._notify()

    def _dispatch(self, frames: list[Any]) -> bool:
        """Resolve the call a received message answers; False if it answered none."""
        try:
            msg = decode(frames, self._limits)
        except ProtocolError as exc:
            return self._in_flight.deliver_error(exc)
        return self._deliver(msg)

    def _deliver(self, msg: Message) -> bool:
        landed = self._in_flight.deliver(msg, not self._unix)
        if self._in_flight.dropped:  # ZeroMQ closed the connection on an oversized call
            self._in_flight.dropped = False
            self._reconnect(f"{self.endpoint} closed the connection on a frame over its limit")
            landed = True
        return landed

    def _reconnect(self, reason: str) -> None:
        """Fail everything in flight and start a fresh socket, so stale requests never arrive."""
        self._fail_all(TransportError(reason))
        self._channel.close()
        self._channel = self._connect()

    def _lost(self, exc: ChannelClosed) -> None:
        """The stream broke (unix://): what was in flight is lost; the next send reconnects."""
        self._fail_all(TransportError(str(exc)))

    def _fail_all(self, error: TransportError) -> None:
        self._outbox.clear()
        self._in_flight.fail_all(error)
        self._notify()

    # -- keeper thread -------------------------------------------------------------------------
    def _keep(self) -> None:
        """Heartbeat while idle, notice a dead server while idle, drive call_async futures."""
        while not self._closed:
            self._keeper_kick.wait(self._interval / 2)
            self._keeper_kick.clear()
            if self._closed or not self._drive_lock.acquire(timeout=self._interval / 4):
                continue
            try:
                if self._closed:
                    return
                now = time.monotonic()
                if self._in_flight.async_in_flight():  # drive until every call_async future is done
                    self._drive(
                        lambda: not self._in_flight.async_in_flight(), now + self._interval / 2
                    )
                else:
                    self._idle_tick(now)
            finally:
                self._release()

    def _idle_tick(self, now: float) -> None:
        self._flush()
        if now - self._last_send >= self._interval:
            self._send(self._heartbeat_frames)
        self._receive()
        heard = max(self._last_recv, self._busy_since if self._pending else 0.0)
        if time.monotonic() - heard > _LIVENESS_MISSES * self._interval:
            # Silent server while idle: a fresh socket, so nothing stale is queued for it.
            self._reconnect(f"no traffic from {self.endpoint}: server dead or unreachable")


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)
