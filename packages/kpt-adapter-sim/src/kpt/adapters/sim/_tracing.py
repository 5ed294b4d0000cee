"""torch.kpt_sim.trace(path): a Perfetto (Chrome JSON) trace of the work issued inside.

The daemon times every op on the simulated chip (one process per device, one lane per stream);
this process knows what each op was (shapes, dtypes, FLOPs and bytes when costed here) and when
it issued it. Inside ``trace()`` each launch is logged; at the end the daemon's trace is fetched
and its events from this window get the logged details as args, in launch order per device.
The output adds a host process with the issue lane, and a memory counter per device (bytes held
by this process's tensors when each op was issued, placed at the op's simulated start).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST_PID = 999_999  # the host process row (the daemon uses device indices and 1,000,000)


@dataclass
class Launch:
    device: int
    op: str
    inputs: list[str]  # "float32[8, 8]" per tensor argument
    flops: float | None
    nbytes: float | None
    issued_us: float  # host microseconds since the trace began
    allocated: int  # bytes this process's tensors held on the device at issue
    issued_unix_ns: int = 0  # host wall clock at issue (torch.profiler's clock)


@dataclass
class TraceRecorder:
    """What this process launched while a trace() is open (owned by the Runtime)."""

    started: float = field(default_factory=time.perf_counter)
    launches: list[Launch] = field(default_factory=list)
    limit: int = 1_000_000
    dropped: int = 0
    kind: str = "trace"  # "trace" (torch.kpt_sim.trace) or "profiler" (torch.profiler)

    def launched(self, device: int, op: str, tensors: list, cost: Any, allocated: int) -> None:
        if len(self.launches) >= self.limit:
            self.dropped += 1
            return
        inputs = [f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}" for t in tensors]
        flops = float(cost[1]) if cost else None
        nbytes = float(cost[2]) if cost else None
        issued = (time.perf_counter() - self.started) * 1e6
        self.launches.append(
            Launch(device, op, inputs, flops, nbytes, issued, allocated, time.time_ns())
        )


class Fanout:
    """Several recorders open at once (a trace() inside a torch.profiler window)."""

    def __init__(self, recorders: list[TraceRecorder]) -> None:
        self.recorders = recorders

    def launched(self, *args: Any) -> None:
        for recorder in self.recorders:
            recorder.launched(*args)


def attached(runtime: Any) -> list[TraceRecorder]:
    """The recorders the runtime's launches are logged to (Runtime.tracer holds them)."""
    current = runtime.tracer
    if current is None:
        return []
    return list(current.recorders) if isinstance(current, Fanout) else [current]


def attach(runtime: Any, recorder: TraceRecorder) -> None:
    recorders = [*attached(runtime), recorder]
    runtime.tracer = recorders[0] if len(recorders) == 1 else Fanout(recorders)


def detach(runtime: Any, recorder: TraceRecorder) -> None:
    recorders = [r for r in attached(runtime) if r is not recorder]
    runtime.tracer = (
        None if not recorders else recorders[0] if len(recorders) == 1 else Fanout(recorders)
    )


def matched_launches(daemon_trace: dict, recorder: TraceRecorder, since_s: float
                     ) -> list[tuple[Launch, dict]]:  # fmt: skip
    """(launch, the daemon's event for it) pairs: per device, the daemon's events since
    ``since_s`` (simulated) taken in order, each matched to the next launch of the same name."""
    pending: dict[int, list[Launch]] = defaultdict(list)
    for launch in recorder.launches:
        pending[launch.device].append(launch)
    position: dict[int, int] = defaultdict(int)
    pairs = []
    for event in daemon_trace.get("traceEvents", []):
        if event.get("ph") != "X" or event.get("ts", 0.0) < since_s * 1e6:
            continue
        device = event.get("pid")
        queue, at = pending.get(device, []), position[device]
        if at < len(queue) and event.get("name") == queue[at].op:
            position[device] = at + 1
            pairs.append((queue[at], event))
    return pairs


def read_daemon_trace(runtime: Any) -> dict:
    """The daemon's whole Chrome trace (needs the daemon owner's rights)."""
    with tempfile.TemporaryDirectory(prefix="kpt-sim-trace-") as folder:
        raw = Path(runtime.client.dump_trace(Path(folder) / "daemon.json"))
        return json.loads(raw.read_text())


def merge(daemon_trace: dict, recorder: TraceRecorder, since_s: float,
          device_names: list[str]) -> dict:  # fmt: skip
    """The daemon's events since ``since_s`` (simulated), with this process's launch details."""
    pending: dict[int, list[Launch]] = defaultdict(list)
    for launch in recorder.launches:
        pending[launch.device].append(launch)
    position: dict[int, int] = defaultdict(int)
    events: list[dict] = []
    for event in daemon_trace.get("traceEvents", []):
        if event.get("ph") == "M":
            events.append(event)
            continue
        if event.get("ts", 0.0) < since_s * 1e6:
            continue
        device = event.get("pid")
        queue, at = pending.get(device, []), position[device]
        if at < len(queue) and event.get("name") == queue[at].op:
            launch = queue[at]
            position[device] = at + 1
            args = {"inputs": launch.inputs, "flops": launch.flops, "bytes": launch.nbytes,
                    "issued_us": launch.issued_us}  # fmt: skip
            event = {**event, "args": args}
            events.append({"ph": "C", "pid": device, "name": "memory allocated (this process)",
                           "ts": event["ts"], "args": {"bytes": launch.allocated}})  # fmt: skip
        events.append(event)
    for device, name in enumerate(device_names):  # kpt_sim names on the device processes
        events.append({"ph": "M", "pid": device, "name": "process_name",
                       "args": {"name": f"kpt_sim:{device} ({name})"}})  # fmt: skip
    events.append({"ph": "M", "pid": HOST_PID, "name": "process_name",
                   "args": {"name": "host (issue, wall-clock us since trace start)"}})  # fmt: skip
    for launch in recorder.launches:
        events.append({"ph": "X", "pid": HOST_PID, "tid": 1, "name": launch.op,
                       "ts": launch.issued_us, "dur": 1.0, "cat": "issue",
                       "args": {"device": launch.device, "inputs": launch.inputs}})  # fmt: skip
    matched = sum(position.values())
    other = {**daemon_trace.get("otherData", {}), "launches": len(recorder.launches),
             "launches_matched": matched, "launches_dropped": recorder.dropped}  # fmt: skip
    return {"traceEvents": events, "displayTimeUnit": "ns", "otherData": other}


@contextlib.contextmanager
def trace(runtime: Any, path: str | os.PathLike, synchronize: Any) -> Iterator[TraceRecorder]:
    """Log launches inside; on exit write the merged trace to ``path``."""
    if any(r.kind == "trace" for r in attached(runtime)):
        raise RuntimeError("torch.kpt_sim.trace() is already open in this process; nest none")
    synchronize()
    since = float(runtime.client.now())
    recorder = TraceRecorder()
    attach(runtime, recorder)
    try:
        yield recorder
    finally:
        detach(runtime, recorder)
    synchronize()
    daemon_trace = read_daemon_trace(runtime)
    names = [str(d.get("profile") or d.get("model") or "") for d in runtime.devices]
    Path(path).write_text(json.dumps(merge(daemon_trace, recorder, since, names)))
