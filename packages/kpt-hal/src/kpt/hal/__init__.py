"""kpt.hal: one interface to every accelerator PyTorch can drive, explained when it can't."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kpt.hal._adapter import Adapter, Telemetry, TorchDeviceAdapter
from kpt.hal._cpu import CpuAdapter
from kpt.hal._discovery import ALLOW_LIST_ENV, ENTRY_POINT_GROUP, Registry
from kpt.hal._health import HealthMonitor, check_health
from kpt.hal._mesh import MeshPlan
from kpt.hal._nominal import NominalSpec, nominal_spec
from kpt.hal._privateuse1 import PrivateUse1TakenError, register_python_device
from kpt.hal._triton import TritonRun, TritonUnavailableError, run_triton
from kpt.hal._types import (
    AdapterInfo,
    Capabilities,
    Device,
    HealthReport,
    HealthState,
    HostKernelRun,
    Interconnect,
    Link,
    NoDeviceError,
    Probe,
    Value,
)
from kpt.hal._version import __version__

_default_registry = Registry()


def registry() -> Registry:
    """The process-wide registry behind adapters(), devices() and select()."""
    return _default_registry


def adapters() -> list[AdapterInfo]:
    """Every adapter found, with status loaded / no-hardware / rejected / conflict and why."""
    return _default_registry.adapters()


def devices() -> list[Device]:
    """Every usable device of every loaded adapter, each with its torch.device."""
    return _default_registry.devices()


def device(spec: Any) -> Device:
    """The device for "cuda:1", "kpt_sim:0", torch.device("cpu"), ..."""
    return _default_registry.device(spec)


def select(**needs: Any) -> Device:
    """Best device meeting needs: min_memory=, dtype=, vendor=, adapter=, device_type=,
    feature=, healthy=, simulated=. Real accelerators rank above simulated devices, and those
    above the CPU. Failed devices are never chosen; NoDeviceError explains refusals."""
    return _default_registry.select(**needs)


def health(device: Any = None) -> HealthReport | dict[Device, HealthReport]:
    """Ask the adapters now: one device's HealthReport ("kpt_sim:0", a torch.device or a
    Device), or every device's. Recorded, so select() skips what failed from then on."""
    if device is None:
        return check_health(_default_registry)
    found = device if isinstance(device, Device) else _default_registry.device(device)
    return check_health(_default_registry, [found])[found]


def plan_mesh(world_size: int, devices: Sequence[Device] | None = None) -> MeshPlan:
    """Place world_size ranks on devices (default: the best kind usable), by node and link speed."""
    return _default_registry.plan_mesh(world_size, devices)


def refresh(*, rescan: bool = False) -> None:
    """Probe again on the next query; rescan=True also re-reads installed entry points."""
    _default_registry.refresh(rescan=rescan)


def register_adapter(adapter: Adapter | type[Adapter], *, name: str | None = None) -> None:
    """Add an adapter at runtime, as if installed through the kpt.adapters entry point."""
    _default_registry.register(adapter, name=name)


def unregister_adapter(name: str) -> None:
    """Remove an adapter added with register_adapter()."""
    _default_registry.unregister(name)


__all__ = [
    "ALLOW_LIST_ENV",
    "Adapter",
    "AdapterInfo",
    "Capabilities",
    "CpuAdapter",
    "Device",
    "ENTRY_POINT_GROUP",
    "HealthMonitor",
    "HealthReport",
    "HealthState",
    "HostKernelRun",
    "Interconnect",
    "Link",
    "MeshPlan",
    "NoDeviceError",
    "NominalSpec",
    "PrivateUse1TakenError",
    "Probe",
    "Registry",
    "Telemetry",
    "TorchDeviceAdapter",
    "TritonRun",
    "TritonUnavailableError",
    "Value",
    "__version__",
    "adapters",
    "device",
    "devices",
    "health",
    "nominal_spec",
    "plan_mesh",
    "refresh",
    "register_adapter",
    "register_python_device",
    "registry",
    "run_triton",
    "select",
    "unregister_adapter",
]
