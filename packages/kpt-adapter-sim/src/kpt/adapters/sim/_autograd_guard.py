"""Make backward work on every kpt_sim device in one process, or refuse a graph clearly.

torch's Python device guard (torch/csrc/acc/Module.cpp, PythonDeviceGuard::deviceCount) reports
one device. torch's autograd engine sizes its per-device ready queues from the registered guards
once per process, at the first backward of any kind (Engine::start_device_threads), and backward
through a tensor on a device without a queue dies in an INTERNAL ASSERT `device.index() <
device_ready_queues_.size()` (torch/csrc/autograd/engine.cpp).

``enable()`` (at device registration) puts a small native guard in front of the Python one that
reports the real device count (_native_guard). ``check_graph_device`` runs before an op records
autograd history on kpt_sim:N, N >= 1, and raises a RuntimeError saying why and what to do when
the engine has no queue for N: the native guard could not be built (no compiler), or the
engine's queues were sized before kpt_sim said how many devices it has.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import torch

from kpt.adapters.sim import _native_guard, _native_runtime
from kpt.adapters.sim_hal._settings import NativeSettings, Settings

_grad_enabled = torch.is_grad_enabled
_multithreading_enabled = torch._C._is_multithreading_enabled
# Ops that never record history even on inputs requiring grad (Module.to's swap detaches).
_NO_HISTORY = frozenset({"aten::detach.default", "aten::alias.default"})
# Device count assumed for a shared daemon before this process connects to it: the engine's
# queue count is fixed at the first backward, and an unused queue costs one idle thread.
_SHARED_DAEMON_GUESS = 16
_MAX_DEVICES = 127  # c10::DeviceIndex is int8


@dataclass
class _State:
    library: ctypes.CDLL | None = None  # set once the device guard is installed
    loaded: ctypes.CDLL | None = None  # the native library, loaded at registration
    runtime_hooks: _native_runtime.NativeRuntime | None = None  # pinned memory, accelerator API
    unavailable: str = "the native device guard was not installed (kpt_sim not registered)"
    # Devices below this index have an engine queue (known for sure): no further check needed.
    # kpt_sim:0 is assumed to have one without the native guard (torch's guard reports 1).
    ready_below: int = 1


_state = _State()


def install_runtime_hooks() -> bool:
    """Load the native library (compiled once, then cached) and register its PrivateUse1 hooks
    and device allocator (pinned memory, torch.accelerator); False, with the reason kept, when
    it cannot (torch then gets kpt.hal's Python hooks). Called while registering the device."""
    settings = NativeSettings.from_environ()
    if not settings.enabled:
        _state.unavailable = "KPT_SIM_NATIVE_GUARD=0 turned the native library off"
        return False
    try:
        library = _native_guard.load(settings=settings)
        _state.runtime_hooks = _native_runtime.install(library)
    except (
        _native_guard.NativeGuardUnavailable,
        _native_runtime.HooksUnavailable,
        OSError,
    ) as error:  # fmt: skip  (OSError: source missing)
        _state.unavailable = str(error)
        return False
    _state.loaded = library
    return True


def enable() -> None:
    """Put the native device guard in front of torch's Python one (after registration)."""
    if _state.library is not None or _state.loaded is None:
        return
    try:
        _native_guard.install(_state.loaded, _device_count_guess())
    except (_native_guard.NativeGuardUnavailable, ValueError) as error:
        _state.unavailable = str(error)
        return
    _state.library = _state.loaded
    _state.ready_below = 0  # check kpt_sim:0 once too: a backward before import left no queue


def native_guard_reason() -> str | None:
    """None when the native guard is installed, else why it is not."""
    return None if _state.library is not None else _state.unavailable


def needs_check(device: int) -> bool:
    """Whether ops on ``device`` must pass check_graph_device (cheap: the hot path asks this)."""
    return device >= _state.ready_below


def check_graph_device(device: int, tensors: Any, name: str) -> None:
    """Raise if an autograd graph recorded on ``device`` could not run backward in this process."""
    if device < _state.ready_below or name in _NO_HISTORY or not _grad_enabled():
        return
    if any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
        _admit(device, name)


def _admit(device: int, name: str) -> None:
    if not _multithreading_enabled():
        return  # the engine runs every node on the calling thread: no device queue is read
    reason = _why_no_queue(device)
    if reason is None:
        return
    raise RuntimeError(
        f"{name}: kpt_sim:{device} cannot record autograd graphs in this process: {reason}. "
        "torch's autograd engine gives each device index a ready queue, sized once per process "
        "at the first backward from the PrivateUse1 device guard (PythonDeviceGuard::"
        "deviceCount in torch/csrc/acc/Module.cpp reports 1), so backward here would fail an "
        "internal assert in torch/csrc/autograd/engine.cpp. Ways around it: run forward and "
        "backward inside `with torch.autograd.set_multithreading_enabled(False):` (the engine "
        "then uses no device queue), or use one process per device: "
        f"KPT_SIM_VISIBLE_DEVICES={device} makes daemon device {device} that process's "
        "kpt_sim:0. Forward-only use (torch.no_grad()) of several devices works."
    )


def _why_no_queue(device: int) -> str | None:
    """None when the engine has (or will have) a ready queue for ``device``, else why not."""
    library = _state.library
    if library is None:
        return _state.unavailable
    queues = _native_guard.engine_device_queues(library)
    if queues is None:  # no backward yet in this process: make the engine size for every device
        count = min(max(device + 1, _connected_device_count()), _MAX_DEVICES)
        _native_guard.install(library, count)
        _state.ready_below = count
        return None
    if device < queues:
        _state.ready_below = queues
        return None
    return (
        f"the engine made {queues} device queue(s) at this process's first backward, which ran "
        "before kpt_sim reported this many devices (a backward before `import "
        "kpt.adapters.sim`, or a shared daemon with more than "
        f"{_SHARED_DAEMON_GUESS} devices)"
    )


def _connected_device_count() -> int:
    from kpt.adapters.sim._runtime import runtime

    return len(runtime().devices)


def _device_count_guess() -> int:
    """This process's device count without connecting to a daemon (exact when embedded)."""
    from kpt.adapters.sim._runtime import embedded_device_count

    try:
        settings = Settings.from_environ()
        if settings.endpoint:
            visible = settings.visible
            count = len(visible) if visible else _SHARED_DAEMON_GUESS
        else:
            count = embedded_device_count()
    except ValueError:  # a bad setting is reported when the runtime starts
        count = 1
    return min(max(count, 1), _MAX_DEVICES)
