"""Buffers that an operation in flight will still write: the client touches them only once it
has settled.

A rank that posts its part of a collective goes on at once, as with NCCL (kpt.collectives
completes the Work at the post), but the daemon combines the values only when the last rank
posts. Until then this process must not send work that reads or writes the collective's
buffers, and must not wait for the device: the stream that posted waits for the collective, so
the daemon refuses the wait. SimClient asks its Holds before each message that names a buffer
(launch, copy, write, free, another group's collective) and before each host wait (read,
synchronize, event_time). How to settle a hold (poll the collective until it is done) is the
holder's business; a hold whose operation failed raises that failure to the first caller that
settles it. Not on a thread torch runs in C++ (autograd's device threads, where DDP's reducer
copies gradients into its buckets): an exception there aborts the process, so the failure is
kept and raised by the next call on a Python thread, and the work that touched the buffers goes
on (the values are lost with the collective anyway).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable


class Hold:
    __slots__ = ("buffers", "group", "order", "settle")

    def __init__(
        self, buffers: tuple[int, ...], settle: Callable[[], None], group: str, order: int
    ) -> None:
        self.buffers = buffers
        self.settle = settle  # blocks until the operation is done; raises its failure
        self.group = group  # operations of one group are ordered by the daemon itself
        self.order = order  # settled oldest first


class Holds:
    """The holds of one client (thread-safe). Empty is the common case and costs one check."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: dict[Hold, None] = {}  # in the order they were added
        # buffer -> group -> holds: a lookup costs the buffers named and the groups on them
        self._by_buffer: dict[int, dict[str, dict[Hold, None]]] = {}
        self._added = itertools.count()
        self._deferred: BaseException | None = None  # found on a C++ thread, not raised yet

    def __bool__(self) -> bool:
        return bool(self._holds) or self._deferred is not None

    def add(self, buffers: Iterable[int], settle: Callable[[], None], group: str) -> Hold:
        # A tuple of distinct ints, not a set: the collector stops tracking it, and a program
        # keeps thousands of holds alive at once.
        hold = Hold(tuple(set(map(int, buffers))), settle, group, next(self._added))
        with self._lock:
            self._holds[hold] = None
            for buffer in hold.buffers:
                self._by_buffer.setdefault(buffer, {}).setdefault(group, {})[hold] = None
        return hold

    def release(self, hold: Hold) -> None:
        with self._lock:
            if hold not in self._holds:
                return  # released already
            del self._holds[hold]
            for buffer in hold.buffers:
                groups = self._by_buffer[buffer]
                del groups[hold.group][hold]
                if not groups[hold.group]:
                    del groups[hold.group]
                    if not groups:
                        del self._by_buffer[buffer]

    def touching(self, buffers: Iterable[int], group: str | None = None) -> None:
        """Settle the holds on any of `buffers`, oldest first, except those of `group`."""
        if not self._holds and self._deferred is None:  # the common case: nothing held
            return
        with self._lock:
            found = [
                h
                for b in buffers
                for g, holds in self._by_buffer.get(b, {}).items()
                if g != group
                for h in holds
            ]  # fmt: skip
        # Nothing of another group's on them (a group posting behind its own collectives):
        # nothing to settle, and no failure kept to raise.
        if found or self._deferred is not None:
            self._settle(sorted(set(found), key=lambda h: h.order))

    def all(self) -> None:
        """Settle every hold (before the host waits for the device)."""
        if not self:
            return
        with self._lock:
            found = list(self._holds)
        self._settle(found)

    def _settle(self, holds: list[Hold]) -> None:
        foreign = isinstance(threading.current_thread(), threading._DummyThread)
        if not foreign and self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        for hold in holds:
            try:
                hold.settle()
            except Exception as exc:
                if not foreign:
                    raise
                self._deferred = self._deferred or exc
            finally:  # done, or its failure delivered: either way it holds nothing any more
                self.release(hold)
