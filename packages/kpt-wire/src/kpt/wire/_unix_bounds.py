"""What a unix:// listener may hold for its connections, and how it waits out a full fd table.

Per-message bounds are Limits'; these bound the listener as a whole, so no client, however it
behaves, can make the server hold unbounded memory or descriptors or spin a CPU:
connections beyond ``max_connections`` are closed as soon as they are accepted; a message begun
must be complete within ``partial_message_timeout_s`` (a stalled or trickling sender is dropped);
bytes of half-received messages are bounded across connections (past the bound, only the oldest
such message goes on being read, the rest wait in their sockets); replies a client does not read
are bounded per connection and in total. Accepting with the process out of descriptors
(EMFILE/ENFILE) stops watching the listening socket for a while instead of polling it hot.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import Protocol

from kpt.wire._stream import StreamReader, StreamWriter

log = logging.getLogger("kpt.wire.server")

# accept() failures that mean "no resources now", not "this connection was bad"
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_FIRST_BACKOFF_S = 0.01
_MAX_BACKOFF_S = 1.0
_REFUSAL_LOG_EVERY_S = 10.0  # a flood of refused connections logs once per this, with a count


@dataclass(frozen=True)
class ListenerBounds:
    """Bounds on what a unix:// listener holds across its connections (see the module doc)."""

    max_connections: int = 1024
    partial_message_timeout_s: float = 30.0
    max_partial_bytes: int = 4 << 30
    max_queued_bytes: int = 1 << 30  # replies waiting for one client that does not read them
    max_queued_bytes_total: int = 4 << 30

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_partial_bytes",
            "max_queued_bytes",
            "max_queued_bytes_total",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ListenerBounds.{name} must be a positive int, got {value!r}")
        timeout = self.partial_message_timeout_s
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(
                f"ListenerBounds.partial_message_timeout_s must be > 0 seconds, got {timeout!r}"
            )


class AcceptBackoff:
    """When accept() fails for want of descriptors: how long to stop watching the listener.

    The pending connection stays in the kernel's backlog, so the listening socket stays readable
    and a poll loop that keeps watching it would spin. Waits double from 10 ms to 1 s while the
    failures last; one accepted connection resets them.
    """

    def __init__(self, endpoint: str):
        self._endpoint = endpoint
        self._delay = 0.0
        self.resume_at: float | None = None  # monotonic time to watch the listener again
        self.failures = 0  # accept() calls that failed for want of resources, all told

    def failed(self, exc: OSError, now: float, open_connections: int) -> None:
        self.failures += 1
        if not self._delay:
            log.warning(
                "cannot accept on %s: %s (%s) with %d connections open; not accepting for a "
                "while, retrying with backoff up to %.0f s; raise the descriptor limit "
                "(ulimit -n) or close connections",
                self._endpoint, exc.strerror or exc, errno.errorcode.get(exc.errno, exc.errno),
                open_connections, _MAX_BACKOFF_S,
            )  # fmt: skip
        self._delay = min(_MAX_BACKOFF_S, max(_FIRST_BACKOFF_S, self._delay * 2))
        self.resume_at = now + self._delay

    def succeeded(self) -> None:
        if self._delay:
            log.info("accepting on %s again", self._endpoint)
        self._delay = 0.0


class RefusalLog:
    """Logs connections refused over the bound: the first at once, then a count per interval."""

    def __init__(self, endpoint: str, limit: int):
        self._endpoint = endpoint
        self._limit = limit
        self._unlogged = 0
        self._logged_at: float | None = None
        self.refused = 0  # all told

    def refused_one(self, now: float) -> None:
        self.refused += 1
        self._unlogged += 1
        self.tick(now)

    def tick(self, now: float) -> None:
        """Log what was refused since the last line, unless that line is too recent."""
        if not self._unlogged:
            return
        if self._logged_at is not None and now - self._logged_at < _REFUSAL_LOG_EVERY_S:
            return
        log.warning(
            "refused %d connection(s) to %s: %d are open, the most allowed "
            "(ListenerBounds.max_connections); close idle clients or raise the bound",
            self._unlogged, self._endpoint, self._limit,
        )  # fmt: skip
        self._unlogged = 0
        self._logged_at = now


class Holding(Protocol):
    """What Holdings reads and keeps on a connection (the listener's _Connection)."""

    reader: StreamReader
    writer: StreamWriter
    client: bytes | None
    since: float | None
    held: int
    queued: int
    paused: bool


class Holdings:
    """The bytes all connections hold -- parts of messages read, replies not yet sent -- held
    within ListenerBounds. It decides whom to pause, resume or drop; the listener does it."""

    def __init__(self, bounds: ListenerBounds):
        self._bounds = bounds
        self.partial: set[Holding] = set()  # a message (or the greeting) begun, not complete
        self.paused: set[Holding] = set()  # not read while the partial-byte bound is used up
        self.queued_by: set[Holding] = set()  # replies queued, waiting for the client to read
        self.partial_bytes = 0
        self.queued_bytes = 0

    def began(self, connection: Holding, clock: float) -> None:
        connection.since = clock
        self.partial.add(connection)

    def greeted(self, connection: Holding) -> None:
        connection.since = None
        self.partial.discard(connection)

    def read_limit(self) -> int:
        """What one read may take into a message: what is left of the partial-byte bound (the
        reader takes at least one chunk), so no read jumps far past the bound."""
        return self._bounds.max_partial_bytes - self.partial_bytes

    def after_read(self, connection: Holding, completed: bool, clock: float) -> list[Holding]:
        """Account a read; returns the connections whose watching changes (paused or resumed)."""
        reader = connection.reader
        held = reader.held_bytes
        self.partial_bytes += held - connection.held
        connection.held = held
        if not reader.mid_message:
            connection.since = None
            self.partial.discard(connection)
            return self._rebalance(clock)
        if connection.since is None or completed:  # a new message began
            connection.since = clock
        self.partial.add(connection)
        if self.partial_bytes <= self._bounds.max_partial_bytes or not held or connection.paused:
            return []  # (a paused one is read only when its peer hangs up: it stays paused)
        # Over the bound: only the oldest incomplete message goes on being read, so it completes
        # and frees its bytes; the others wait in their sockets (their senders block), and are
        # never dropped for it.
        oldest = min((c for c in self.partial if c.held and not c.paused), key=_since)
        if oldest is connection:
            return []
        connection.paused = True
        self.paused.add(connection)
        return [connection]

    def after_queue(self, connection: Holding) -> Holding | None:
        """Account replies queued or sent; returns a connection to drop, if one must go."""
        queued = connection.writer.queued_bytes
        self.queued_bytes += queued - connection.queued
        connection.queued = queued
        if queued:
            self.queued_by.add(connection)
        else:
            self.queued_by.discard(connection)
        bounds = self._bounds
        if queued > bounds.max_queued_bytes:
            log.warning(
                "dropped client %r: %d bytes of replies wait for it, over the %d allowed; a "
                "client must read its replies", connection.client, queued, bounds.max_queued_bytes,
            )  # fmt: skip
            return connection
        if self.queued_bytes <= bounds.max_queued_bytes_total:
            return None
        hoarder = max(self.queued_by, key=lambda c: c.queued)
        log.warning(
            "dropped client %r: replies waiting for all clients reached %d bytes, over the %d "
            "allowed, and %d of them are this client's, the most", hoarder.client,
            self.queued_bytes, bounds.max_queued_bytes_total, hoarder.queued,
        )  # fmt: skip
        return hoarder

    def late(self, clock: float) -> list[Holding]:
        """Connections whose message (or greeting) has been incomplete past the deadline."""
        timeout = self._bounds.partial_message_timeout_s
        return [c for c in self.partial if not c.paused and clock - c.since > timeout]

    def forget(self, connection: Holding, clock: float) -> list[Holding]:
        """The connection is closed: release its bytes; returns connections to read again."""
        connection.reader.release()
        connection.writer.release()
        self.partial_bytes -= connection.held
        self.queued_bytes -= connection.queued
        connection.held = connection.queued = 0
        self.partial.discard(connection)
        self.paused.discard(connection)
        self.queued_by.discard(connection)
        connection.paused = False
        return self._rebalance(clock)

    def _rebalance(self, clock: float) -> list[Holding]:
        """Bytes were freed: read paused connections again (all, or the oldest if still over)."""
        if not self.paused:
            return []
        if self.partial_bytes > self._bounds.max_partial_bytes:
            if any(c.held and not c.paused for c in self.partial):
                return []  # one is still being read; when it completes this runs again
            resume = [min(self.paused, key=_since)]
        else:
            resume = list(self.paused)
        for connection in resume:
            self.paused.discard(connection)
            connection.paused = False
            connection.since = clock  # time spent paused is the server's doing, not the sender's
        return resume


def _since(connection: Holding) -> float:
    return connection.since
