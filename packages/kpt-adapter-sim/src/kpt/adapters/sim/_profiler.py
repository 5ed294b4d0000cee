"""torch.profiler shows kpt_sim kernels: simulated time in its table and its Chrome trace.

Why post-processing: torch takes device activities from C++ only, a kineto IActivityProfiler
(``PrivateUse1ProfilerRegistry``, which torch 2.11 lacks) or the legacy ``ProfilerStubs``, and
kpt_sim's kernel times exist only in the simulator daemon, after the work ran. So, while a
torch profiler with ``ProfilerActivity.PrivateUse1`` is open on this device, each launch is
logged (op, device, host wall time); when the profiler stops, the daemon's trace gives each
launch its stream and simulated start and duration. When torch turns its results into events,
each kernel becomes a PrivateUse1 event and is attached to the innermost op that was running
on the host when it was launched, as CUDA kernels are through correlation ids, so
``device_time_total`` and the table's kpt_sim columns count it. ``export_chrome_trace`` adds
one process per device with one lane per stream. Simulated time runs on its own clock: the
device lanes start at the first launch's host time and keep simulated durations and gaps.
"""

from __future__ import annotations

import bisect
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.autograd.profiler_util import FunctionEvent

from kpt.adapters.sim._tracing import TraceRecorder, attach, detach, matched_launches
from kpt.adapters.sim._tracing import read_daemon_trace as _read_daemon_trace

DEVICE_TYPE = "kpt_sim"
WRAPPED = "_kpt_sim_wrapped"  # marks torch's profiler methods wrapped here (install is idempotent)
HOST_SEARCH_DEPTH = 64  # host events searched backwards for the one enclosing a launch
# Host events that are not ops: torch's event for a Python subclass's __torch_dispatch__ (the
# adapter itself); kernels belong to the aten op around it.
NOT_OPS = frozenset({"PythonSubclass"})
DEVICE_PID_BASE = 0  # Chrome trace: device N is process N, as kineto numbers GPUs


@dataclass(frozen=True)
class Kernel:
    """One simulated kernel of a profiling window."""

    name: str
    device: int
    stream: int
    launched_unix_ns: int  # host wall clock at launch
    sim_start_us: float  # simulated clock
    sim_dur_us: float


class Window:
    """One profiler window on kpt_sim: launches logged from start to stop."""

    def __init__(self, runtime: Any, synchronize: Any) -> None:
        self.runtime, self.synchronize = runtime, synchronize
        synchronize()  # work queued before the window is not in it
        self.since = float(runtime.client.now())
        self.recorder = TraceRecorder(kind="profiler")
        attach(runtime, self.recorder)

    def close(self) -> list[Kernel]:
        detach(self.runtime, self.recorder)
        self.synchronize()
        try:
            daemon_trace = _read_daemon_trace(self.runtime)
        except Exception as exc:  # a shared daemon's trace needs its owner's rights
            warnings.warn(
                f"kpt_sim: the profiler shows no device time: the daemon's trace could not be "
                f"read ({type(exc).__name__}: {exc}); profile on an embedded daemon (unset "
                "KPT_SIM_ENDPOINT) or use torch.kpt_sim.Event timing",
                RuntimeWarning,
                stacklevel=3,
            )
            return []
        return [
            Kernel(
                launch.op,
                launch.device,
                int(event.get("tid", 0)),
                launch.issued_unix_ns,
                float(event["ts"]),
                float(event.get("dur", 0.0)),
            )
            for launch, event in matched_launches(daemon_trace, self.recorder, self.since)
        ]


def install(runtime_of: Any, synchronize: Any) -> None:
    """Wrap torch.autograd.profiler.profile (which torch.profiler.profile drives) once."""
    profile = torch.autograd.profiler.profile
    names = ("_start_trace", "__exit__", "_parse_kineto_results", "export_chrome_trace")
    if any(not hasattr(profile, name) for name in names):
        warnings.warn(
            f"kpt_sim: this torch's profiler lacks one of {names}; torch.profiler will show no "
            "kpt_sim device time (use torch.kpt_sim.trace)",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    if getattr(profile._start_trace, WRAPPED, False):
        return
    start, exit_, parse, export = (getattr(profile, name) for name in names)

    def _start_trace(self: Any) -> Any:
        if self.use_device == DEVICE_TYPE:
            self._kpt_sim_window = Window(runtime_of(), synchronize)
        return start(self)

    def __exit__(self: Any, *exc: Any) -> Any:
        result = exit_(self, *exc)
        window = getattr(self, "_kpt_sim_window", None)
        if window is not None:
            self._kpt_sim_window = None
            self._kpt_sim_kernels = window.close()
            if self._function_events is not None:  # parsed already (acc_events=True)
                trace_start_ns = self.kineto_results.trace_start_ns()
                for event in device_events(self._kpt_sim_kernels, self._function_events,
                                           trace_start_ns, self.use_device):  # fmt: skip
                    self._function_events.append(event)
        return result

    def _parse_kineto_results(self: Any, result: Any, *args: Any, **kwargs: Any) -> Any:
        events = parse(self, result, *args, **kwargs)
        kernels = getattr(self, "_kpt_sim_kernels", None)
        if kernels:
            events = [*events, *device_events(kernels, events, result.trace_start_ns(),
                                              self.use_device)]  # fmt: skip
        return events

    def export_chrome_trace(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        result = export(self, path, *args, **kwargs)
        kernels = getattr(self, "_kpt_sim_kernels", None)
        if kernels and Path(path).is_file():
            add_device_lanes(Path(path), kernels, device_names(runtime_of()))
        return result

    for name, wrapper in zip(
        names, (_start_trace, __exit__, _parse_kineto_results, export_chrome_trace), strict=True
    ):
        setattr(wrapper, WRAPPED, True)
        wrapper.__wrapped__ = getattr(profile, name)
        setattr(profile, name, wrapper)


def device_names(runtime: Any) -> list[str]:
    return [str(d.get("profile") or d.get("model") or "") for d in runtime.devices]


def host_offset_us(kernels: list[Kernel], zero_ns: int) -> float:
    """Added to a simulated time: the first kernel starts at its launch's host time."""
    first = min(kernels, key=lambda k: k.sim_start_us)
    return (first.launched_unix_ns - zero_ns) / 1000 - first.sim_start_us


def device_events(kernels: list[Kernel], host_events: Any, trace_start_ns: int,
                  use_device: str) -> list[FunctionEvent]:  # fmt: skip
    """A PrivateUse1 FunctionEvent per kernel, each also appended as a kernel to the innermost
    host op running when it was launched (what gives that op its device time)."""
    enclosing = _EnclosingOp(host_events)
    offset = host_offset_us(kernels, trace_start_ns)
    next_id = max((e.id for e in host_events), default=0) + 1
    added = []
    for number, kernel in enumerate(kernels):
        start = kernel.sim_start_us + offset
        event = FunctionEvent(
            id=next_id + number, name=kernel.name, thread=kernel.stream, start_us=start,
            end_us=start + kernel.sim_dur_us, fwd_thread=kernel.stream, input_shapes=[],
            stack=[], use_device=use_device, device_type=torch._C._autograd.DeviceType.PrivateUse1,
            device_index=kernel.device, trace_name=kernel.name,
        )  # fmt: skip
        added.append(event)
        host = enclosing.at((kernel.launched_unix_ns - trace_start_ns) / 1000)
        if host is not None:
            host.append_kernel(kernel.name, kernel.device, kernel.sim_dur_us)
    return added


class _EnclosingOp:
    """Finds the innermost host op event (not a Python frame) whose span holds a time."""

    def __init__(self, events: Any) -> None:
        cpu = torch._C._autograd.DeviceType.CPU
        self.events = sorted(
            (e for e in events if e.device_type == cpu and not e.is_async
             and not getattr(e, "is_python_function", False) and e.name not in NOT_OPS),
            key=lambda e: e.time_range.start,
        )  # fmt: skip
        self.starts = [e.time_range.start for e in self.events]

    def at(self, time_us: float) -> FunctionEvent | None:
        last = bisect.bisect_right(self.starts, time_us) - 1
        for index in range(last, max(-1, last - HOST_SEARCH_DEPTH), -1):
            event = self.events[index]
            if event.time_range.end >= time_us:
                return event
        return None


def add_device_lanes(path: Path, kernels: list[Kernel], names: list[str]) -> None:
    """Add the kernels to a kineto Chrome trace: a process per device, a lane per stream."""
    document = json.loads(path.read_text())
    zero_ns = int(document.get("baseTimeNanoseconds", 0))
    offset = host_offset_us(kernels, zero_ns)
    lanes = sorted({(k.device, k.stream) for k in kernels})
    pids = {DEVICE_PID_BASE + d for d, _ in lanes}
    # kineto labels device processes itself ("GPU 0" even without one): ours replace them.
    events = [
        e
        for e in document.get("traceEvents", [])
        if not (e.get("ph") == "M" and e.get("pid") in pids and e.get("tid", 0) == 0)
    ]
    document["traceEvents"] = events
    for device in sorted({d for d, _ in lanes}):
        label = f"kpt_sim:{device}" + (f" ({names[device]})" if device < len(names) else "")
        pid = DEVICE_PID_BASE + device
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                       "args": {"name": f"{label}, simulated time"}})  # fmt: skip
        events.append({"ph": "M", "name": "process_labels", "pid": pid, "tid": 0,
                       "args": {"labels": f"kpt_sim {device}"}})  # fmt: skip
        events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                       "args": {"sort_index": 5_000_000 + device}})  # fmt: skip
    for device, stream in lanes:
        events.append({"ph": "M", "name": "thread_name", "pid": DEVICE_PID_BASE + device,
                       "tid": stream, "args": {"name": f"stream {stream}"}})  # fmt: skip
    for kernel in kernels:
        events.append({
            "ph": "X", "cat": "kernel", "name": kernel.name, "pid": DEVICE_PID_BASE + kernel.device,
            "tid": kernel.stream, "ts": kernel.sim_start_us + offset, "dur": kernel.sim_dur_us,
            "args": {"device": kernel.device, "stream": kernel.stream, "simulated": True,
                     "launched_us": (kernel.launched_unix_ns - zero_ns) / 1000},
        })  # fmt: skip
    path.write_text(json.dumps(document))
