"""The client's calls in flight: each one's reply or error, deadlines, the server's frame limit.

Owned by one Client and touched only by the thread that drives its socket (or, before a call is
sent, by the caller that submits it), so nothing here takes a lock.
"""

from __future__ import annotations

import heapq
from concurrent.futures import Future
from typing import Any

from kpt.wire._codec import ERROR_TYPE, HEARTBEAT_TYPE, Message
from kpt.wire._errors import CallTimeout, ProtocolError, RemoteError


class Call:
    """One request in flight; its reply or error lands here (and in ``future`` for call_async).

    A plain slotted object, not a Future: the sync path checks ``done()`` several times per call
    and a Future takes a lock each time.
    """

    __slots__ = ("deadline", "error", "future", "largest_frame", "reply", "request_id", "what")

    def __init__(
        self,
        request_id: int,
        deadline: float,
        what: str,
        future: Future | None,
        largest_frame: int = 0,
    ):
        self.request_id = request_id
        self.deadline = deadline
        self.what = what
        self.future = future
        self.largest_frame = largest_frame  # bytes; 0 where the transport answers oversize
        self.reply: Message | None = None
        self.error: BaseException | None = None

    def done(self) -> bool:
        return self.reply is not None or self.error is not None

    def resolve(self, reply: Message) -> None:
        if not self.done():
            self.reply = reply
            if self.future is not None and not self.future.done():
                self.future.set_result(reply)

    def fail(self, error: BaseException) -> None:
        if not self.done():
            self.error = error
            if self.future is not None and not self.future.done():
                self.future.set_exception(error)


class InFlight:
    """Calls sent and not yet answered, by request id, and what their answers mean.

    ``calls`` is a plain dict on purpose: the client's fast path reads and writes it directly.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.calls: dict[int, Call] = {}
        self.deadlines: list[tuple[float, int]] = []  # heap of call_async deadlines
        # The server's max_message_bytes, from its heartbeat replies (ZeroMQ only: there a frame
        # over it closes the connection unanswered, so the client must refuse it itself).
        self.frame_limit: int | None = None
        # A call over that limit was sent: ZeroMQ closed the connection with it, and what is
        # sent before the socket notices can be lost too. The client then starts a fresh one.
        self.dropped = False

    def add(self, call: Call, is_async: bool) -> None:
        self.calls[call.request_id] = call
        if is_async:
            heapq.heappush(self.deadlines, (call.deadline, call.request_id))

    def pop(self, request_id: int) -> Call | None:
        return self.calls.pop(request_id, None)

    def deliver(self, msg: Message, learns_limits: bool) -> bool:
        """Resolve the call ``msg`` answers; False if it answered none. ``learns_limits``: a
        heartbeat's declared frame limit applies (ZeroMQ)."""
        call = self.calls.pop(msg.request_id, None)
        if call is None:
            if msg.type == HEARTBEAT_TYPE and learns_limits:
                return self._learn_frame_limit(msg.header)
            return False  # a late reply to a call that timed out
        if msg.type == ERROR_TYPE:
            call.fail(remote_error(msg))
        else:
            call.resolve(msg)
        return True

    def deliver_error(self, exc: ProtocolError) -> bool:
        call = self.calls.pop(exc.request_id, None) if exc.request_id else None
        if call is None:
            return False
        call.fail(exc)
        return True

    def refuse_oversized(self, what: str, largest_frame: int) -> None:
        limit = self.frame_limit
        if limit is not None and largest_frame > limit:
            raise self._oversized_error(what, largest_frame, limit)

    def oversized_instead(self, call: Call) -> ProtocolError | None:
        """For a call with no reply: the real reason when it was too big for the server."""
        limit = self.frame_limit
        if limit is not None and call.largest_frame > limit:
            return self._oversized_error(call.what, call.largest_frame, limit)
        return None

    def expire(self, now: float) -> None:
        """Fail the call_async calls whose deadline has passed."""
        while self.deadlines and self.deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self.deadlines)
            call = self.calls.pop(request_id, None)
            if call is not None:
                call.fail(
                    self.oversized_instead(call)
                    or CallTimeout(f"no reply to {call.what!r} from {self.endpoint} in time")
                )

    def fail_all(self, error: BaseException) -> None:
        self.deadlines.clear()
        for request_id in list(self.calls):
            call = self.calls.pop(request_id, None)
            if call is not None:
                call.fail(self.oversized_instead(call) or error)  # the cause, where known

    def async_in_flight(self) -> bool:
        # Entries of finished futures linger in the heap; drop them from the top.
        while self.deadlines and self.deadlines[0][1] not in self.calls:
            heapq.heappop(self.deadlines)
        return bool(self.deadlines)

    def _learn_frame_limit(self, header: dict[str, Any]) -> bool:
        """Take the server's declared limit; fail calls already sent over it (ZeroMQ dropped
        them with the connection). True if any call was failed."""
        limit = header.get("max_message_bytes")
        if limit.__class__ is not int or limit < 1:
            return False  # an older server, or nonsense: keep what we knew
        self.frame_limit = limit
        failed = False
        for request_id, call in list(self.calls.items()):
            if call.largest_frame > limit:
                del self.calls[request_id]
                call.fail(self._oversized_error(call.what, call.largest_frame, limit))
                failed = True
        self.dropped = self.dropped or failed
        return failed

    def _oversized_error(self, what: str, largest_frame: int, limit: int) -> ProtocolError:
        return ProtocolError(
            f"{what!r}: a frame of {largest_frame} bytes is over the max_message_bytes of "
            f"{limit} that {self.endpoint} declared (ZeroMQ closes the connection on such a "
            "frame without an answer); send smaller arrays per message or raise the server's "
            "Limits(max_message_bytes=...)",
            code="limit",
        )


def remote_error(msg: Message) -> RemoteError:
    header = msg.header
    code = header.get("code")
    message = header.get("message")
    details = header.get("details")
    return RemoteError(
        code if isinstance(code, str) else "unknown",
        message if isinstance(message, str) else repr(message),
        details if isinstance(details, dict) else {},
    )
