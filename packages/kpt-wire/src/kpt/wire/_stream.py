"""The kpt.wire envelope over a byte stream (the unix:// transport): framing, a reader that
never blocks on a partial message, and a writer that queues what the kernel will not take yet.

On the stream a message is a table, then its frames back to back (integers big-endian):
``u32 frame count, one u32 size per frame, frame bytes...``. A connection opens with the client's
preamble ``b"KPTU" + u8 length + client id``. The frames themselves are exactly the envelope
that travels over ZeroMQ (see docs/protocol.md), so decode() and its limits apply unchanged.
"""

from __future__ import annotations

import collections
import socket
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from kpt.wire._codec import read_request_id
from kpt.wire._limits import Limits

STREAM_MAGIC = b"KPTU"
MAX_ID_BYTES = 255
_COUNT = struct.Struct(">I")
_HARD_MAX_FRAMES = 1 << 16  # past this the table itself is nonsense: the stream is desynced
_READ_CHUNK = 1 << 16  # below glibc's mmap threshold: recv's buffer stays a cheap malloc
_OWN_BUFFER = 1 << 16  # bodies above this are read in place into their own buffer
_HEAD_KEEP = 1 << 16  # of a refused oversized message, keep this much to find its request id
_IOV_MAX = 512  # buffers per sendmsg call (Linux allows 1024)


class StreamError(Exception):
    """The byte stream broke the framing: the connection cannot be trusted and must close."""


class Oversized:
    """Stands for a message over ``max_message_bytes`` that was read and dropped, not kept."""

    def __init__(self, total: int, head: Sequence[Any]):
        self.total = total
        self.request_id = read_request_id(head) if len(head) >= 3 else None


def preamble(client_id: bytes) -> bytes:
    if not 0 < len(client_id) <= MAX_ID_BYTES:
        raise ValueError(f"client id must be 1..{MAX_ID_BYTES} bytes, got {len(client_id)}")
    return STREAM_MAGIC + bytes([len(client_id)]) + client_id


def table(frames: Sequence[Any]) -> bytes:
    sizes = [f.nbytes if f.__class__ is memoryview else len(f) for f in frames]
    if max(sizes, default=0) >= 1 << 32:
        raise ValueError(
            f"a frame of {max(sizes)} bytes is over the unix:// transport's 4 GiB per frame; "
            "send the array in pieces"
        )
    return struct.pack(f">{len(sizes) + 1}I", len(sizes), *sizes)


class StreamReader:
    """Turns whatever arrives on a non-blocking socket into complete messages (lists of frames).

    The first three frames (envelope) come out as bytes; array frames as bytes or, for a large
    body, memoryviews of one buffer that recv_into filled in place. Frames past
    ``max_frames + 1`` are read and dropped, so decode() sees one too many and names the limit.
    """

    def __init__(self, limits: Limits):
        self._max_frames = limits.max_frames + 1
        self._max_bytes = limits.max_message_bytes
        self._pending = b""  # bytes received but not yet parsed into a message
        self._body: np.ndarray | None = None  # a large body being filled in place
        self._body_view: memoryview | None = None
        self._filled = 0
        self._sizes: tuple[int, ...] = ()
        self._skip = 0  # bytes of a refused oversized message still to drop
        self._skip_total = 0
        self._head = bytearray()  # the start of that message, for its request id
        self._head_sizes: tuple[int, ...] = ()
        self._head_want = 0

    @property
    def mid_message(self) -> bool:
        """True while a message has begun and is not complete (or an oversized one not dropped)."""
        return bool(self._pending) or self._body is not None or self._skip > 0

    @property
    def held_bytes(self) -> int:
        """Bytes held for the message not yet complete (what its sender has sent of it)."""
        body = self._filled if self._body is not None else 0
        return len(self._pending) + body + len(self._head)

    def release(self) -> None:
        """Let go of everything held for a message not yet complete (the connection is gone)."""
        self._pending = b""
        self._body = self._body_view = None
        self._filled = self._skip = self._head_want = 0
        self._head = bytearray()

    def read(self, sock: socket.socket, limit: int | None = None) -> list[Any]:
        """Messages completed by one read (maybe none); EOFError when the peer closed.

        ``limit`` caps the bytes one read takes into a large message's buffer (never below one
        chunk), so a reader that holds bytes within a budget overshoots it by one chunk at most.
        """
        if self._body is not None:
            view = self._body_view[self._filled :]
            if limit is not None:
                view = view[: max(limit, _READ_CHUNK)]
            received = sock.recv_into(view)
            if not received:
                raise EOFError
            self._filled += received
            if self._filled < len(self._body):
                return []
            body, self._body, self._body_view = self._body_view, None, None
            return [_split(body, self._sizes, self._max_frames)]
        chunk = sock.recv(_READ_CHUNK)
        if not chunk:
            raise EOFError
        if self._skip:
            chunk = self._drop(chunk)
            if not chunk:
                return [] if self._skip else [self._refused()]
            messages: list[Any] = [self._refused()]
        else:
            messages = []
        data = self._pending + chunk if self._pending else chunk
        self._pending = b""
        self._parse(data, messages)
        return messages

    def _parse(self, data: bytes, messages: list[Any]) -> None:
        end = len(data)
        position = 0
        while end - position >= 4:
            (count,) = _COUNT.unpack_from(data, position)
            if not 0 < count <= _HARD_MAX_FRAMES:
                raise StreamError(f"message table announces {count} frames")
            body_start = position + 4 + 4 * count
            if body_start > end:
                break
            sizes = struct.unpack_from(f">{count}I", data, position + 4)
            total = sum(sizes)
            body_end = body_start + total
            if total > self._max_bytes:
                self._skip, self._skip_total = total, total
                self._head = bytearray()
                self._keep_head(sizes)
                rest = self._drop(data[body_start:])
                if not self._skip:
                    messages.append(self._refused())
                    self._parse(rest, messages)
                return
            if body_end > end:
                if total > _OWN_BUFFER:  # fill its own buffer in place from here on
                    # np.empty, not bytearray(n): no zero-fill pass over memory about to be
                    # overwritten (first-touch page faults are dear in a VM).
                    self._body = np.empty(total, np.uint8)
                    self._body_view = memoryview(self._body)
                    self._filled = end - body_start
                    self._body_view[: self._filled] = data[body_start:end]
                    self._sizes = sizes
                    return
                break
            messages.append(_split(memoryview(data)[body_start:body_end], sizes, self._max_frames))
            position = body_end
        self._pending = data[position:] if position < end else b""

    # -- oversized messages: keep their head, drop the rest, answer with a limit error --------
    def _keep_head(self, sizes: tuple[int, ...]) -> None:
        self._head_sizes = sizes[:3]
        self._head_want = min(sum(self._head_sizes), _HEAD_KEEP)

    def _drop(self, chunk: bytes) -> bytes:
        """Drop what belongs to the oversized message; return what follows it."""
        take = min(self._skip, len(chunk))
        if len(self._head) < self._head_want:
            self._head += chunk[: min(take, self._head_want - len(self._head))]
        self._skip -= take
        return chunk[take:]

    def _refused(self) -> Oversized:
        head: list[bytes] = []
        offset = 0
        for size in self._head_sizes:
            if offset + size > len(self._head):
                break
            head.append(bytes(self._head[offset : offset + size]))
            offset += size
        self._head = bytearray()
        return Oversized(self._skip_total, head)


def _split(body: memoryview, sizes: Sequence[int], max_frames: int) -> list[Any]:
    frames: list[Any] = []
    offset = 0
    for index, size in enumerate(sizes):
        if index >= max_frames:
            break
        piece = body[offset : offset + size]
        # Envelope frames and small arrays as bytes: the view of a shared chunk would keep the
        # whole chunk alive, and decode() reads them as bytes anyway.
        frames.append(piece.tobytes() if index < 3 or size <= _OWN_BUFFER else piece)
        offset += size
    return frames


class StreamWriter:
    """Sends messages on a non-blocking socket; what the kernel does not take waits here.

    ``copy``: queue copies of what is left, for a sender that moves on before the queue drains
    (a server); a sender that flushes before it returns (a client) keeps views instead.
    """

    def __init__(self, sock: socket.socket, copy: bool = True):
        self._sock = sock
        self._copy = copy
        self._queue: collections.deque[memoryview] = collections.deque()
        self.queued_bytes = 0

    def send(self, frames: Sequence[Any]) -> bool:
        """Send or queue one message; True when nothing is left queued."""
        buffers = [memoryview(table(frames))]
        buffers += [memoryview(f).cast("B") for f in frames]
        if self._queue:
            self._enqueue(buffers)
            return self.flush()
        sent = _sendmsg(self._sock, buffers)
        total = sum([b.nbytes for b in buffers])  # a list: no generator resumed per frame
        if sent == total:
            return True
        self._enqueue(_advance(buffers, sent))
        return False

    def flush(self) -> bool:
        """Send what is queued; True when the queue is empty. OSError if the peer is gone."""
        while self._queue:
            buffers = list(self._queue)[:_IOV_MAX]
            sent = _sendmsg(self._sock, buffers)
            if not sent:
                return False
            self.queued_bytes -= sent
            while sent:
                head = self._queue[0]
                if head.nbytes <= sent:
                    sent -= head.nbytes
                    self._queue.popleft()
                else:
                    self._queue[0] = head[sent:]
                    sent = 0
        return True

    def release(self) -> None:
        """Drop every queued reply (the connection is gone)."""
        self._queue.clear()
        self.queued_bytes = 0

    def _enqueue(self, buffers: list[memoryview]) -> None:
        for buffer in buffers:
            if buffer.nbytes:
                # A copy when the sender may change its arrays once send() has returned.
                self._queue.append(memoryview(bytes(buffer)) if self._copy else buffer)
                self.queued_bytes += buffer.nbytes


def _sendmsg(sock: socket.socket, buffers: list[memoryview]) -> int:
    try:
        return sock.sendmsg(buffers[:_IOV_MAX])
    except (BlockingIOError, InterruptedError):
        return 0


def _advance(buffers: list[memoryview], sent: int) -> list[memoryview]:
    for index, buffer in enumerate(buffers):
        if sent < buffer.nbytes:
            return [buffer[sent:], *buffers[index + 1 :]]
        sent -= buffer.nbytes
    return []
