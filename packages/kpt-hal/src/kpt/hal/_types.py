"""The data an adapter reports: capabilities, probe results, health reports, devices."""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import torch

ValueSource = Literal["measured", "nominal"]
AdapterStatus = Literal["loaded", "no-hardware", "rejected", "conflict"]
# What a device is, as select() ranks it: real accelerators first, then simulated devices,
# then the host CPU (see _select.KIND_RANK).
DeviceKind = Literal["accelerator", "simulated", "host"]
SIMULATED_FEATURE = "simulated"  # the feature a simulated device advertises


@dataclass(frozen=True)
class Value:
    """A figure with its unit, and whether it was measured here or read from a datasheet."""

    amount: float
    unit: str
    source: ValueSource = "nominal"

    def __post_init__(self) -> None:
        if self.source not in ("measured", "nominal"):
            raise ValueError(
                f"Value source {self.source!r} is not 'measured' or 'nominal'; "
                "use 'measured' for figures taken on this machine, 'nominal' for table values"
            )

    def __str__(self) -> str:
        return f"{self.amount:.4g} {self.unit} ({self.source})"


@dataclass(frozen=True)
class Link:
    """One kind of link out of a device, e.g. NVLink at 900 GB/s to its node peers."""

    kind: str  # "nvlink", "xgmi", "xe-link", "pcie", "sim", ...
    bandwidth: Value  # per direction, bytes per second, summed over this kind's lanes


@dataclass(frozen=True)
class Interconnect:
    """How a device reaches others: its node, its links, and which peers it reaches directly."""

    node: str = field(default_factory=socket.gethostname)
    links: tuple[Link, ...] = ()
    peers: frozenset[int] = frozenset()  # indices of same-adapter devices reachable peer to peer

    @property
    def fastest_link(self) -> float:
        """Bytes per second of the fastest link, 0.0 when the device has none."""
        return max((link.bandwidth.amount for link in self.links), default=0.0)


@dataclass(frozen=True)
class Capabilities:
    """What one device is and what it can do. Frozen: a snapshot taken at discovery."""

    vendor: str
    model: str
    index: int
    memory_total: int  # bytes
    memory_free: int  # bytes, when the snapshot was taken
    peak_flops: Mapping[str, Value] = field(default_factory=dict)  # dtype name -> FLOP/s
    memory_bandwidth: Value | None = None
    dtypes: frozenset[str] = frozenset()
    interconnect: Interconnect = field(default_factory=Interconnect)
    driver_version: str = ""
    runtime_version: str = ""
    features: frozenset[str] = frozenset()  # "triton", "graphs", "fp8", ...
    top_flops: float = field(init=False, repr=False, compare=False)  # best peak_flops, FLOP/s

    def __hash__(self) -> int:  # peak_flops is a mapping; hash what identifies the device
        return hash((self.vendor, self.model, self.index, self.memory_total))

    @property
    def simulated(self) -> bool:
        """True for a device whose time and memory are modelled (features holds "simulated")."""
        return SIMULATED_FEATURE in self.features

    def __post_init__(self) -> None:
        # Frozen means frozen: a caller must not be able to edit the cached snapshot.
        object.__setattr__(self, "peak_flops", MappingProxyType(dict(self.peak_flops)))
        top = max((v.amount for v in self.peak_flops.values()), default=0.0)
        object.__setattr__(self, "top_flops", top)  # select() ranks by it on every call
        object.__setattr__(self, "dtypes", frozenset(self.dtypes))
        object.__setattr__(self, "features", frozenset(self.features))
        if self.memory_total < 0 or self.memory_free < 0:
            raise ValueError(
                f"memory_total={self.memory_total} and memory_free={self.memory_free} "
                "must be byte counts >= 0"
            )


@dataclass(frozen=True)
class Probe:
    """What an adapter's probe found: a device count, or why there is none."""

    count: int
    reason: str = ""  # why no device was found (empty when count > 0)
    looked_for: str = ""  # what was looked for, e.g. "torch.cuda on a CUDA build"

    @classmethod
    def found(cls, count: int, looked_for: str = "") -> Probe:
        return cls(count=count, looked_for=looked_for)

    @classmethod
    def none(cls, reason: str, looked_for: str = "") -> Probe:
        return cls(count=0, reason=reason, looked_for=looked_for)


class HealthState(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"


@dataclass(frozen=True)
class HealthReport:
    """A device's health: state, why, and the readings it was judged on."""

    state: HealthState
    reason: str = ""
    readings: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "state", HealthState(self.state))
        except ValueError:
            raise ValueError(
                f"health state {self.state!r} is not one of healthy, degraded, failed"
            ) from None
        object.__setattr__(self, "readings", MappingProxyType(dict(self.readings)))

    @classmethod
    def healthy(cls, reason: str = "", **readings: float) -> HealthReport:
        return cls(HealthState.HEALTHY, reason, readings)


@dataclass(frozen=True)
class HostKernelRun:
    """A kernel that ran under the interpreter on behalf of a device (given to the adapter)."""

    kernel: str  # the kernel function's name
    grid: tuple[int, ...]  # the launch grid, padded to 3 dimensions
    device: torch.device  # the device the kernel was meant for
    host_seconds: float  # wall time the interpreter took on the host
    bytes_in: int  # bytes copied device -> host before the run
    bytes_out: int  # bytes copied host -> device after it


@dataclass(frozen=True)
class AdapterInfo:
    """One adapter as discovery saw it, with the reason for its status."""

    name: str
    dist: str | None  # the distribution that declared it, None when not found
    status: AdapterStatus
    reason: str = ""
    device_type: str | None = None
    device_count: int = 0
    target: str = ""  # the entry point's "module:Class", or "<runtime>" when injected
    looked_for: str = ""  # what a probe that found nothing looked for (also ends `reason`)

    @property
    def loaded(self) -> bool:
        return self.status == "loaded"


class Device:
    """One usable device: which adapter serves it, its torch.device, its capabilities.

    Two Device records are equal when they name the same device (adapter, type and index),
    even if taken at different discoveries; usable as dict keys and in sets. A device type
    torch does not know yet (a PrivateUse1 backend, registered on first use, not at
    discovery) is given as its name, e.g. "kpt_sim", with ``register``: the first read of
    ``torch_device`` calls it, so listing or selecting devices leaves torch as it was.
    """

    __slots__ = (
        "_hash",
        "_register",
        "_torch",
        "adapter",
        "capabilities",
        "device_type",
        "index",
        "kind",
        "name",
    )  # fmt: skip

    adapter: str
    index: int
    capabilities: Capabilities
    device_type: str  # torch_device.type, known without making the torch.device
    kind: DeviceKind  # accelerator / simulated / host

    def __init__(
        self,
        adapter: str,
        index: int,
        torch_device: torch.device | str,
        capabilities: Capabilities,
        *,
        register: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(torch_device, torch.device):
            device_type, known = torch_device.type, torch_device
        else:
            device_type, known = str(torch_device), None
        if capabilities.simulated:
            kind = "simulated"
        elif device_type == "cpu":
            kind = "host"
        else:
            kind = "accelerator"
        setattr_ = object.__setattr__
        setattr_(self, "adapter", adapter)
        setattr_(self, "index", index)
        setattr_(self, "capabilities", capabilities)
        setattr_(self, "device_type", device_type)
        setattr_(self, "kind", kind)
        setattr_(self, "name", f"{device_type}:{index}")
        setattr_(self, "_torch", known)
        setattr_(self, "_register", register)
        setattr_(self, "_hash", hash((adapter, device_type, index)))

    @property
    def torch_device(self) -> torch.device:
        """The torch.device; for a type torch does not know yet, registers it first."""
        known = self._torch
        if known is None:
            if self._register is not None:
                self._register()
            known = torch.device(self.device_type, self.index)
            object.__setattr__(self, "_torch", known)
        return known

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Device is read-only: cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Device):
            return NotImplemented
        return (self.adapter, self.name) == (other.adapter, other.name)

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple:
        # copy/pickle: slots cannot be set back through the read-only __setattr__.
        return (Device, (self.adapter, self.index, self._torch or self.device_type,
                         self.capabilities))  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"Device(adapter={self.adapter!r}, index={self.index}, "
            f"torch_device={self.name!r}, capabilities={self.capabilities!r})"
        )

    def __str__(self) -> str:
        caps = self.capabilities
        return f"{self.name} ({caps.vendor} {caps.model}, adapter {self.adapter})"


class NoDeviceError(LookupError):
    """No device met the needs; `refusals` maps each device to why it was refused."""

    def __init__(self, needs: Mapping[str, object], refusals: Mapping[str, list[str]]):
        self.needs = dict(needs)
        self.refusals = {name: list(why) for name, why in refusals.items()}
        wanted = ", ".join(f"{k}={v!r}" for k, v in self.needs.items()) or "no constraints"
        if not self.refusals:
            detail = "  no devices were discovered at all (run `kpt doctor` to see why)"
        else:
            detail = "\n".join(f"  {name}: {'; '.join(why)}" for name, why in self.refusals.items())
        super().__init__(f"no device meets {wanted}:\n{detail}")
