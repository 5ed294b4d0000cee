"""``torch.kpt_sim``: devices, streams, events, memory and RNG of the device."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from kpt.adapters.sim import _memory_report, _runtime, _tracing
from kpt.adapters.sim._graphs import Graph, graph, graph_pool_handle  # noqa: F401 (torch.kpt_sim.*)
from kpt.adapters.sim._host_timing import graph_replay, host_work  # noqa: F401 (torch.kpt_sim.*)
from kpt.adapters.sim._properties import DeviceProperties, device_properties
from kpt.adapters.sim._runtime import device_index as _index
from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim_hal._errors import as_torch_error
from kpt.adapters.sim_hal._settings import Settings
from kpt.sim import SimError


class Stream:
    """An in-order queue of work on one simulated device (like torch.cuda.Stream)."""

    def __init__(self, device: Any = None, priority: int = 0) -> None:
        self.device_index = _index(device)
        self.priority = priority
        self.stream_id = runtime().streams.new()

    @property
    def device(self) -> torch.device:
        return torch.device("kpt_sim", self.device_index)

    def record_event(self, event: Event | None = None) -> Event:
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        event.wait(self)

    def wait_stream(self, stream: Stream) -> None:
        self.wait_event(stream.record_event())

    def synchronize(self) -> None:
        synchronize(self.device_index)

    def query(self) -> bool:
        synchronize(self.device_index)
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stream) and other.stream_id == self.stream_id

    def __hash__(self) -> int:
        return hash(("kpt_sim", self.stream_id))

    def __repr__(self) -> str:
        return f"<torch.kpt_sim.Stream device={self.device} stream_id={self.stream_id}>"


class _DefaultStream(Stream):
    def __init__(self, device_index: int) -> None:
        self.device_index, self.priority, self.stream_id = device_index, 0, 0


def current_stream(device: Any = None) -> Stream:
    index = _index(device)
    sid = runtime().state[index].stream
    stream = _DefaultStream(index)
    stream.stream_id = sid
    return stream


def default_stream(device: Any = None) -> Stream:
    return _DefaultStream(_index(device))


@contextlib.contextmanager
def stream(s: Stream | None) -> Iterator[None]:
    """Work queued inside runs on stream ``s`` of its device."""
    if s is None:
        yield
        return
    state = runtime().state[s.device_index]
    previous, state.stream = state.stream, s.stream_id
    try:
        yield
    finally:
        state.stream = previous


def set_stream(s: Stream) -> None:
    runtime().state[s.device_index].stream = s.stream_id


class Event:
    """A point in a stream; elapsed_time() is in SIMULATED milliseconds."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False) -> None:  # fmt: skip
        self.enable_timing = enable_timing
        self._event: int | None = None
        self._device: int | None = None

    def record(self, stream: Stream | None = None) -> None:
        stream = stream or current_stream()
        self._device = stream.device_index
        self._event = runtime().client.record_event(stream.device_index, stream.stream_id)

    def wait(self, stream: Stream | None = None) -> None:
        if self._event is None:
            return
        stream = stream or current_stream()
        runtime().client.wait_event(self._event, stream.device_index, stream.stream_id)

    def _time(self) -> float:
        if self._event is None:
            raise RuntimeError("kpt_sim Event was never recorded: call .record() first")
        return runtime().client.event_time(self._event)

    def synchronize(self) -> None:
        if self._event is not None:
            self._time()

    def query(self) -> bool:
        self.synchronize()
        return True

    def elapsed_time(self, end: Event) -> float:
        """Simulated milliseconds between this event and ``end`` (both must be recorded)."""
        if not (self.enable_timing and end.enable_timing):
            raise RuntimeError("both events need Event(enable_timing=True) to measure time")
        return (end._time() - self._time()) * 1e3


# -- devices -------------------------------------------------------------------------------------
def is_available() -> bool:
    try:
        import kpt.sim  # noqa: F401
    except ImportError:
        return False
    return True


def is_initialized() -> bool:
    return _runtime.is_started()


def init() -> None:
    runtime()


def device_count() -> int:
    if _runtime.is_started() or Settings.from_environ().endpoint:
        return len(runtime().devices)
    return _runtime.embedded_device_count()


def current_device() -> int:
    return runtime().current_device if _runtime.is_started() else 0


def set_device(device: Any) -> None:
    runtime().current_device = _index(device)


class device:
    """Context manager that makes ``index`` the current kpt_sim device."""

    def __init__(self, index: Any) -> None:
        self.index = _index(index) if index is not None and index != -1 else None
        self.previous = 0

    def __enter__(self) -> None:
        if self.index is not None:
            self.previous = current_device()
            set_device(self.index)

    def __exit__(self, *exc: object) -> None:
        if self.index is not None:
            set_device(self.previous)


def get_device_name(device: Any = None) -> str:
    info = runtime().devices[_index(device)]
    return str(info.get("model") or info.get("profile") or "kpt_sim")


def get_device_properties(device: Any = None) -> DeviceProperties:
    """name, total_memory, multi_processor_count, major, minor (as torch.cuda's), plus the
    simulator's own fields (profile, peak rates, bandwidths) as attributes."""
    return device_properties(runtime().devices[_index(device)])


def get_device_capability(device: Any = None) -> tuple[int, int]:
    properties = get_device_properties(device)
    return properties.major, properties.minor


def utilization(device: Any = None) -> int:
    """Percent of simulated time since the previous call (or the start) that the device's
    compute engine was busy, over every process on the daemon (as NVML reports it)."""
    index = _index(device)
    rt = runtime()
    stats = rt.client.memory_stats(index)
    busy, now = float(stats.get("busy_s", 0.0)), float(stats.get("now_s", 0.0))
    state = rt.state[index]
    last_busy, last_now = state.utilization_mark
    state.utilization_mark = (busy, now)
    if now <= last_now:
        return 0
    return round(100 * min(1.0, max(0.0, (busy - last_busy) / (now - last_now))))


def synchronize(device: Any = None) -> None:
    """Wait for queued work; raises the first asynchronous error, typed."""
    index = None if device is None else _index(device)
    try:  # what _errors.translated() does, without a context manager on this hot call
        runtime().client.synchronize(index)
    except SimError as error:
        raise as_torch_error(error) from error


def trace(path: str | os.PathLike) -> contextlib.AbstractContextManager:
    """``with torch.kpt_sim.trace("step.json"):`` writes a Perfetto trace of the work issued
    inside: one process per device with a lane per stream (simulated time), each op with its
    input shapes and dtypes, FLOPs and bytes; a memory counter per device; the host issue lane.
    Reads the daemon's trace, which needs the daemon owner's rights (an embedded daemon's)."""
    return _tracing.trace(runtime(), path, synchronize)


# -- memory --------------------------------------------------------------------------------------
def memory_allocated(device: Any = None) -> int:
    return runtime().allocator.allocated[_index(device)]


def max_memory_allocated(device: Any = None) -> int:
    return runtime().allocator.peak[_index(device)]


def memory_reserved(device: Any = None) -> int:
    return runtime().allocator.reserved[_index(device)]


def reset_peak_memory_stats(device: Any = None) -> None:
    runtime().allocator.reset_peak(_index(device))


def empty_cache() -> None:
    runtime().allocator.empty_cache()


def mem_get_info(device: Any = None) -> tuple[int, int]:
    stats = runtime().client.memory_stats(_index(device))
    return int(stats["free"]), int(stats["total"])


def memory_stats(device: Any = None) -> dict[str, Any]:
    """torch.cuda.memory_stats' keys for this process ("allocated_bytes.all.current", ...)
    plus the device's free/total/allocated bytes over every process on the daemon."""
    index = _index(device)
    rt = runtime()
    return _memory_report.memory_stats(rt.allocator, index, rt.client.memory_stats(index))


def memory_summary(device: Any = None, abbreviated: bool = False) -> str:
    index = _index(device)
    return _memory_report.memory_summary(index, get_device_name(index), memory_stats(index))


def memory_snapshot(device: Any = None) -> list[dict[str, Any]]:
    index = _index(device)
    return _memory_report.memory_snapshot(runtime().allocator, index)


# -- random numbers ------------------------------------------------------------------------------
def manual_seed(seed: int) -> None:
    """Seed the current device's generator (each random op gets (seed, op counter))."""
    state = runtime().state[current_device()]
    state.seed, state.counter = int(seed), 0


def manual_seed_all(seed: int) -> None:
    if not _runtime.is_started():
        _runtime.seed_before_start(int(seed))
        return
    for state in runtime().state.values():
        state.seed, state.counter = int(seed), 0


def seed() -> None:
    manual_seed(int.from_bytes(os.urandom(7), "little"))


def seed_all() -> None:
    manual_seed_all(int.from_bytes(os.urandom(7), "little"))


def initial_seed() -> int:
    return runtime().state[current_device()].seed


def get_rng_state(device: Any = None) -> torch.Tensor:
    state = runtime().state[_index(device)]
    return torch.tensor([state.seed, state.counter], dtype=torch.int64).view(torch.uint8)


def set_rng_state(new_state: torch.Tensor, device: Any = None) -> None:
    values = new_state.detach().cpu().contiguous().view(torch.int64).tolist()
    if len(values) != 2:
        raise ValueError(
            f"kpt_sim rng state has 16 bytes (seed, counter); got {new_state.numel()} bytes"
        )
    state = runtime().state[_index(device)]
    state.seed, state.counter = values


def get_rng_state_all() -> list[torch.Tensor]:
    return [get_rng_state(i) for i in range(device_count())]


def set_rng_state_all(states: list[torch.Tensor]) -> None:
    for i, state in enumerate(states):
        set_rng_state(state, i)


# -- autocast ------------------------------------------------------------------------------------
def get_amp_supported_dtype() -> list[torch.dtype]:
    return [torch.bfloat16, torch.float16]


def is_bf16_supported(including_emulation: bool = True) -> bool:
    return True


def _is_in_bad_fork() -> bool:
    return False
