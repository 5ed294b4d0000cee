"""A client's timing events on the daemon (``record_event``, ``wait_event``, ``event_time``):
each client numbers its own, and sees only its own. A mixin of SimDaemon."""

from __future__ import annotations

import math
from typing import Any

from kpt.sim._daemon_buffers import bad, field_int
from kpt.sim._errors import DeviceHangError
from kpt.wire import Message

MAX_EVENTS_PER_CLIENT = 1 << 16  # the oldest are forgotten first


class EventCalls:
    """The event handlers; need ``self.sim``, ``_device``, ``_stream``, ``_record``,
    ``_raise_pending`` and ``refuse_while_capturing`` of SimDaemon."""

    sim: Any

    def record_event(self, header: dict, state: Any, client_id: bytes) -> None:
        event = field_int(header, "event", low=1)
        device = self._device(header)
        self.refuse_while_capturing(state, (device,), "record_event")
        stream = self._stream(client_id, header)
        token = self.sim.record_event(device, stream)
        self._record("record", device=device, event=token, stream=stream)
        state.events[event] = (token, device)
        state.events.move_to_end(event)
        while len(state.events) > MAX_EVENTS_PER_CLIENT:
            state.events.popitem(last=False)

    def wait_event(self, header: dict, state: Any, client_id: bytes) -> None:
        token, _ = self._event(state, header)
        device = self._device(header)
        self.refuse_while_capturing(state, (device,), "wait_event")
        stream = self._stream(client_id, header)
        self.sim.wait_event(token, device, stream)
        self._record("wait", device=device, event=token, stream=stream)

    def wait_stream(self, header: dict, state: Any, client_id: bytes) -> None:
        """`stream` waits for the work issued to this client's stream `on` so far (what
        record_event on `on` and wait_event onto `stream` say, in one message)."""
        device = self._device(header)
        self.refuse_while_capturing(state, (device,), "wait_stream")
        stream = self._stream(client_id, header)
        on = self._stream(client_id, header, "on", default=...)
        self.sim.wait_stream(device, stream, on)
        self._record("wait_stream", device=device, stream=stream, on=on)

    def event_time(self, msg: Message, state: Any, client_id: bytes) -> dict:
        token, device = self._event(state, msg.header)
        time = self.sim.event_time(token)
        if not math.isfinite(time):
            self.sim.synchronize(device)  # raises the hang (or the error that caused it)
            raise DeviceHangError(f"event on device {device} never completes: the device hung")
        self._raise_pending(state)
        return {"time": time}

    def _event(self, state: Any, header: dict) -> tuple[int, int]:
        event = field_int(header, "event", low=1)
        token = state.events.get(event)
        if token is None:
            raise bad(f"event {event} was never recorded by this client (or is long forgotten)")
        return token
