"""Recorded events: a bounded ring of completion times, referenced by increasing ids.

A long-running daemon records an event per CUDA-style Event.record(); keeping every one would
grow without limit. The ring keeps the newest `capacity` events; naming an older id is an
error that says so, instead of a silent wrong time.
"""

from __future__ import annotations

from array import array

from kpt.sim._errors import InvalidRequestError

DEFAULT_MAX_EVENTS = 1 << 18  # 2 MiB of times; the daemon keeps 65,536 per client


class EventRing:
    def __init__(self, capacity: int = DEFAULT_MAX_EVENTS) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise InvalidRequestError(
                f"max_events={capacity!r} must be a positive integer (events kept at once)"
            )
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        self._times = array("d")
        self._next = 0  # the id the next event gets; ids are never reused until clear()

    def __len__(self) -> int:
        return min(self._next, self.capacity)

    def add(self, time: float) -> int:
        event = self._next
        if event < self.capacity:
            self._times.append(time)
        else:
            self._times[event % self.capacity] = time
        self._next = event + 1
        return event

    def time(self, event: int) -> float:
        if not isinstance(event, int) or isinstance(event, bool) or not 0 <= event < self._next:
            raise InvalidRequestError(
                f"event {event!r} was never recorded (or is from before a reset)"
            )
        if event < self._next - self.capacity:
            raise InvalidRequestError(
                f"event {event} expired: the simulator keeps the newest {self.capacity} "
                f"recorded events and {self._next - event - 1} came after it; record it "
                "again closer to where it is waited on, or raise Simulator(max_events=)"
            )
        return self._times[event % self.capacity]
