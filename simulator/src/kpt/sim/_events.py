"""Recorded events: a bounded ring of event markers, referenced by increasing ids.

A long-running daemon records an event per CUDA-style Event.record(); keeping every one would
grow without limit. The ring keeps the newest `capacity` events; naming an older id is an
error that says so, instead of a silent wrong time.
"""

from __future__ import annotations

from typing import Any

from kpt.sim._errors import InvalidRequestError

DEFAULT_MAX_EVENTS = 1 << 18  # the daemon keeps 65,536 per client


class EventRing:
    def __init__(self, capacity: int = DEFAULT_MAX_EVENTS) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise InvalidRequestError(
                f"max_events={capacity!r} must be a positive integer (events kept at once)"
            )
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        self._items: list[Any] = []
        self._next = 0  # the id the next event gets; ids are never reused until clear()

    def __len__(self) -> int:
        return min(self._next, self.capacity)

    def add(self, item: Any) -> int:
        event = self._next
        if event < self.capacity:
            self._items.append(item)
        else:
            self._items[event % self.capacity] = item
        self._next = event + 1
        return event

    def get(self, event: int) -> Any:
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
        return self._items[event % self.capacity]
