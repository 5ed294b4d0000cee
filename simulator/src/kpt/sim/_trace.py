"""Chrome trace JSON (Perfetto and chrome://tracing open it): a track per stream and link."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

LINKS_PID = 1_000_000  # the process row that holds one track per link
# An event costs about 200 bytes of host memory: 262,144 of them about 50 MB. A daemon runs for
# days, so the trace keeps the newest events (a flight recorder), never all of them.
DEFAULT_TRACE_EVENTS = 1 << 18


class Trace:
    def __init__(self, enabled: bool = True, capacity: int = DEFAULT_TRACE_EVENTS) -> None:
        if capacity < 1:
            raise ValueError(f"a trace keeps at least one event, not {capacity!r}")
        self.enabled = enabled
        self.capacity = capacity
        self.clear()

    def clear(self) -> None:
        # (pid, track, name, start_s, end_s); the oldest fall off the end when it is full
        self.events: deque[tuple] = deque(maxlen=self.capacity)
        self.dropped = 0  # events that fell off: the dump says the trace starts late

    def add(self, device: int, track: str, name: str, start: float, end: float) -> None:
        if len(self.events) == self.capacity:
            self.dropped += 1
        self.events.append((device, track, name, start, end))

    def add_link(self, link: str, name: str, start: float, end: float) -> None:
        self.add(LINKS_PID, link, name, start, end)

    def to_chrome(self, device_names: list[str] | None = None) -> dict:
        tids: dict[tuple[int, str], int] = {}
        out: list[dict] = []
        for pid, track, name, start, end in self.events:
            tid = tids.setdefault((pid, track), len(tids) + 1)
            if end == float("inf"):
                name, end = f"{name} (never completes: hung)", start
            out.append({
                "ph": "X", "pid": pid, "tid": tid, "name": name, "cat": track,
                "ts": start * 1e6, "dur": max(end - start, 0.0) * 1e6,
            })  # fmt: skip
        meta: list[dict] = []
        for (pid, track), tid in tids.items():
            meta.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name",
                         "args": {"name": track}})  # fmt: skip
        for pid in sorted({pid for pid, _ in tids}):
            if pid == LINKS_PID:
                label = "links"
            else:
                profile = device_names[pid] if device_names and pid < len(device_names) else ""
                label = f"device {pid} {profile}".strip()
            meta.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": label}})
        return {
            "traceEvents": meta + out,
            "displayTimeUnit": "ns",
            "otherData": {
                "generator": "kpt.sim",
                "dropped_events": self.dropped,  # the oldest; the trace holds the newest
            },
        }

    def dump(self, path: str | Path, device_names: list[str] | None = None) -> None:
        Path(path).write_text(json.dumps(self.to_chrome(device_names)))
