"""The process's connection to the simulator: one Runtime owns the SimClient, the allocator,
per-device state, the settings (every KPT_SIM_* variable, parsed once when it connects), the
fallback ledger, the open trace recorders, the plan cache and the stream numbers.

The first use connects to ``KPT_SIM_ENDPOINT`` or starts an embedded daemon (``KPT_SIM_PROFILE``,
``KPT_SIM_DEVICES``, ``KPT_SIM_NUMERICS``) that stops when this process exits.
``KPT_SIM_VISIBLE_DEVICES`` picks which daemon devices this process sees (numbered from 0).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from kpt.adapters.sim._ledger import FallbackLedger
from kpt.adapters.sim._plan_cache import PlanCache
from kpt.adapters.sim._storage import CachingAllocator
from kpt.adapters.sim._visible import VisibleClient, visible_count
from kpt.adapters.sim_hal._discovery import embedded_daemon_devices
from kpt.adapters.sim_hal._settings import Settings


@dataclass
class DeviceState:
    seed: int = 0
    counter: int = 0  # random ops launched since the last seed: the second half of each op's key
    stream: int = 0
    # Ops dispatched since the last launch that launched nothing (views, allocations): the
    # next launch tells the daemon, whose host model charges each (a profile's host_op_us).
    host_ops: int = 0
    # (busy seconds, clock) at the last utilization() call: its window starts there
    utilization_mark: tuple[float, float] = (0.0, 0.0)
    capture: Any = None  # the torch.kpt_sim.Graph capturing on this device


class StreamIds:
    """Numbers for new streams (``torch.kpt_sim.Stream()``); 0 is every device's default stream.
    Per connection: the daemon keeps each client's stream numbers apart."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def new(self) -> int:
        with self._lock:
            return next(self._next)


@dataclass
class Runtime:
    client: Any
    daemon: Any = None
    devices: list[dict] = field(default_factory=list)
    numerics: bool = True
    current_device: int = 0
    state: dict[int, DeviceState] = field(default_factory=dict)
    tracer: Any = None  # a _tracing.TraceRecorder while torch.kpt_sim.trace() is open
    settings: Settings = field(default_factory=Settings)
    fallbacks: FallbackLedger = field(default_factory=FallbackLedger)
    plans: PlanCache = field(default_factory=PlanCache)
    streams: StreamIds = field(default_factory=StreamIds)
    seed: int | None = None  # torch.manual_seed() before the first use: every device's seed

    def __post_init__(self) -> None:
        self.devices = self.client.devices()
        capacity = {i: int(d.get("memory_total") or 0) for i, d in enumerate(self.devices)}
        self.allocator = CachingAllocator(self.client, capacity)
        self.numerics = bool(getattr(self.client, "numerics", True))
        self.state = {i: DeviceState() for i in range(len(self.devices))}
        if self.seed is not None:
            for state in self.state.values():
                state.seed = self.seed

    def check_device(self, index: int | None) -> int:
        index = self.current_device if index is None else int(index)
        if not 0 <= index < len(self.devices):
            raise ValueError(
                f"kpt_sim device {index} does not exist: the simulator has "
                f"{len(self.devices)} visible device(s) (set KPT_SIM_DEVICES for more, or "
                "KPT_SIM_VISIBLE_DEVICES to pick daemon devices)"
            )
        return index

    def next_rng(self, device: int) -> list[int]:
        state = self.state[device]
        state.counter += 1
        return [state.seed, state.counter]

    def close(self) -> None:
        self.allocator.closed = True
        try:
            self.client.close()
        finally:
            if self.daemon is not None:
                self.daemon.stop()


class RuntimeSlot:
    """Where the process's Runtime lives: the client package's one piece of process state.

    Holds the Runtime once connected (the first use connects, once, under the lock), and the
    seed ``torch.manual_seed`` gave before that (the Runtime starts every device from it).
    ``connect(seed)`` makes a Runtime: the real connection, or a test's stand-in.
    """

    def __init__(self, connect: Callable[[int | None], Runtime] | None = None) -> None:
        self.runtime: Runtime | None = None
        self.pending_seed: int | None = None
        self._connect = connect or _connect
        self._lock = threading.RLock()

    def get(self) -> Runtime:
        """The Runtime, connecting or starting the daemon on first use."""
        current = self.runtime
        if current is not None:
            return current
        with self._lock:
            if self.runtime is None:
                self.runtime = self._connect(self.pending_seed)
                atexit.register(self.shutdown)
            return self.runtime

    def shutdown(self) -> None:
        """Disconnect (and stop the embedded daemon); the next use starts afresh."""
        with self._lock:
            current, self.runtime = self.runtime, None
        if current is not None:
            current.close()


def runtime() -> Runtime:
    """The process's runtime, connecting or starting the daemon on first use."""
    current = _slot.runtime
    return current if current is not None else _slot.get()


def device_index(device: Any = None) -> int:
    """The index of a kpt_sim device argument (an int, None for the current device, a
    torch.device or its string), checked against this process's devices: the one parser of
    device arguments, for torch.kpt_sim and the host-timing calls alike."""
    if isinstance(device, int) or device is None:
        return runtime().check_device(device)
    device = torch.device(device)
    if device.type != "kpt_sim":
        raise ValueError(f"expected a kpt_sim device, got {device}")
    return runtime().check_device(device.index)


def is_started() -> bool:
    return _slot.runtime is not None


def current_runtime() -> Runtime | None:
    """The process's runtime if connected, without connecting."""
    return _slot.runtime


def seed_before_start(seed: int) -> None:
    """torch.manual_seed() before the first use: the Runtime seeds every device with it."""
    _slot.pending_seed = seed


def shutdown() -> None:
    """Disconnect (and stop the embedded daemon); the next use starts afresh."""
    _slot.shutdown()


def embedded_device_count() -> int:
    """How many devices this process would see on an embedded daemon (without starting it)."""
    return visible_count(embedded_daemon_devices(), Settings.from_environ().visible)


# The embedded daemon computes with torch beside this process on the same cores. OpenMP's
# default is to spin-wait after each parallel region: two processes spinning against each other
# made a small training step ~20x slower on a 2-core host. Passive waiting yields the core.
DAEMON_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}
# The daemon imports torch before it answers: tens of seconds on a loaded host (a CI machine
# running several suites took over 60 s, kpt.sim's default). Still a bounded wait.
DAEMON_STARTUP_TIMEOUT_S = 180.0


@contextlib.contextmanager
def _daemon_environment() -> Iterator[None]:
    """os.environ for the daemon's start (it inherits it); the user's own settings win."""
    added = {k: v for k, v in DAEMON_ENVIRONMENT.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _connect(seed: int | None) -> Runtime:
    from kpt.sim import SimClient, start_daemon

    settings = Settings.from_environ()  # the one parse of this runtime's environment
    endpoint = settings.endpoint
    daemon = None
    if not endpoint:
        with _daemon_environment():
            daemon = start_daemon(
                profile=settings.profile,
                devices=settings.daemon_devices(),
                numerics=settings.numerics,
                executor="torch",
                startup_timeout=DAEMON_STARTUP_TIMEOUT_S,
            )
        endpoint = daemon.endpoint
    try:
        # The embedded daemon is this process's own: it may inject faults and read traces.
        token = daemon.admin_token if daemon is not None else None
        client = SimClient(endpoint, heartbeat_interval=settings.heartbeat_s, admin_token=token)
        if settings.visible is not None:
            try:
                client = VisibleClient(client, list(settings.visible))
            except BaseException:
                client.close()
                raise
        return Runtime(client=client, daemon=daemon, settings=settings, seed=seed)
    except BaseException:
        if daemon is not None:
            daemon.stop()
        raise


_slot = RuntimeSlot()  # the process's one Runtime holder
