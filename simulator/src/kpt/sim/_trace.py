"""Chrome trace JSON (Perfetto and chrome://tracing open it): a track per stream and link."""

from __future__ import annotations

import json
from pathlib import Path

LINKS_PID = 1_000_000  # the process row that holds one track per link
MAX_EVENTS = 2_000_000  # beyond this, new events are counted but not kept


class Trace:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.clear()

    def clear(self) -> None:
        self.events: list[tuple] = []  # (pid, track, name, start_s, end_s)
        self.dropped = 0

    def add(self, device: int, track: str, name: str, start: float, end: float) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append((device, track, name, start, end))
        else:
            self.dropped += 1

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
            "otherData": {"generator": "kpt.sim", "dropped_events": self.dropped},
        }

    def dump(self, path: str | Path, device_names: list[str] | None = None) -> None:
        Path(path).write_text(json.dumps(self.to_chrome(device_names)))
