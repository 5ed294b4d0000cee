"""Finding adapters: entry points, the KPT_ADAPTERS allow-list, probing, conflicts.

Every adapter found ends up in `adapters()` with a status and a reason; none is skipped
silently. Discovery is lazy (first query) and cached until `refresh()`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import threading
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from kpt.hal._adapter import Adapter
from kpt.hal._mesh import MeshPlan, plan_mesh
from kpt.hal._privateuse1 import PrivateUse1TakenError
from kpt.hal._select import KIND_RANK, select_device
from kpt.hal._types import AdapterInfo, Device, HealthReport, HealthState

ENTRY_POINT_GROUP = "kpt.adapters"
ALLOW_LIST_ENV = "KPT_ADAPTERS"
RUNTIME_DIST = "<registered at runtime>"
_BUILTIN_CPU = "kpt.hal._cpu:CpuAdapter"
_UNCHECKED = HealthReport(HealthState.HEALTHY, "not checked yet")


class AllowListWarning(UserWarning):
    """KPT_ADAPTERS names an adapter that is not installed: discovery goes on without it."""


@functools.cache
def installed_entry_points() -> tuple[importlib.metadata.EntryPoint, ...]:
    """The kpt.adapters entry points of installed distributions, read once per process."""
    return tuple(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def parse_allow_list(text: str | None) -> list[str] | None:
    """ "nvidia, sim" -> ["nvidia", "sim"]; unset or blank -> None (everything allowed)."""
    if text is None or not text.strip():
        return None
    return [name for name in text.replace(",", " ").split() if name]


@dataclass(frozen=True)
class _Candidate:
    name: str
    dist: str | None
    target: str
    load: Callable[[], Any]


@dataclass(frozen=True)
class _Snapshot:
    infos: tuple[AdapterInfo, ...]
    adapters: dict[str, Adapter]  # loaded ones, by name
    devices: tuple[Device, ...]


def _load_cpu() -> Any:
    from kpt.hal._cpu import CpuAdapter

    return CpuAdapter


class Registry:
    """Discovers adapters and their devices, and remembers each device's last health report.

    `entry_points=None` reads the installed `kpt.adapters` group; pass a list (of
    importlib.metadata.EntryPoint) to discover from exactly those. `allow=None` reads
    KPT_ADAPTERS at discovery time. The CPU adapter is always present, allowed or not.
    """

    def __init__(
        self,
        entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
        *,
        allow: Iterable[str] | str | None = None,
    ) -> None:
        self._entry_points = None if entry_points is None else tuple(entry_points)
        self._allow = allow
        self._runtime: dict[str, _Candidate] = {}
        self._lock = threading.RLock()
        self._snapshot: _Snapshot | None = None
        self._discovering = False
        self._health: dict[Device, HealthReport] = {}

    # ---- injection and refresh ----------------------------------------------------------
    def register(self, adapter: Adapter | type[Adapter], *, name: str | None = None) -> None:
        """Add an adapter (class or instance) as if installed; it shadows an entry point."""
        name = name or getattr(adapter, "name", None)
        if not name:
            raise ValueError(f"{adapter!r} has no `name`; set the class attribute or pass name=")
        with self._lock:
            self._runtime[name] = _Candidate(name, RUNTIME_DIST, "<runtime>", lambda: adapter)
            self._snapshot = None

    def unregister(self, name: str) -> None:
        with self._lock:
            if self._runtime.pop(name, None) is None:
                raise KeyError(f"no adapter {name!r} was registered at runtime")
            self._snapshot = None

    def refresh(self, *, rescan: bool = False) -> None:
        """Forget what was discovered; the next query probes again. rescan re-reads entry points."""
        with self._lock:
            if rescan:
                installed_entry_points.cache_clear()
            self._snapshot = None
            self._health.clear()

    # ---- queries ------------------------------------------------------------------------
    def adapters(self) -> list[AdapterInfo]:
        return list((self._snapshot or self._discover()).infos)

    def devices(self) -> list[Device]:
        return list((self._snapshot or self._discover()).devices)

    def adapter(self, name: str) -> Adapter:
        """The loaded adapter called `name`."""
        snapshot = self._snapshot or self._discover()
        try:
            return snapshot.adapters[name]
        except KeyError:
            loaded = ", ".join(sorted(snapshot.adapters)) or "none"
            raise KeyError(
                f"adapter {name!r} is not loaded (loaded: {loaded}); run `kpt doctor` to see why"
            ) from None

    def device(self, spec: str | torch.device) -> Device:
        """The device for "cuda:1", torch.device("kpt_sim", 0), or "cpu"."""
        device_type, index = _parse_device_spec(spec)
        for device in self.devices():
            if device.device_type == device_type and device.index == index:
                return device
        known = ", ".join(d.name for d in self.devices())
        raise KeyError(f"no device '{device_type}:{index}'; discovered devices: {known}")

    def health(self, device: Device) -> HealthReport:
        """The last health report recorded for `device`."""
        (self._snapshot or self._discover())
        return self._health.get(device, _UNCHECKED)

    def record_health(self, device: Device, report: HealthReport) -> HealthReport | None:
        """Store a new report; returns the previous one."""
        with self._lock:
            previous = self._health.get(device)
            self._health[device] = report
            return previous

    def select(self, **needs: Any) -> Device:
        """The best device meeting `needs`; NoDeviceError says why each device was refused."""
        snapshot = self._snapshot or self._discover()
        return select_device(snapshot.devices, self._health, needs, _UNCHECKED)

    def usable_devices(self) -> list[Device]:
        """Devices not reported failed."""
        return [d for d in self.devices() if self.health(d).state != HealthState.FAILED]

    def plan_mesh(self, world_size: int, devices: Sequence[Device] | None = None) -> MeshPlan:
        """A mesh over `devices` (default: the usable devices of the best kind present: real
        accelerators, else simulated devices, else the CPU; kinds are never mixed)."""
        if devices is None:
            usable = self.usable_devices()
            best = max((KIND_RANK[d.kind] for d in usable), default=None)
            devices = [d for d in usable if KIND_RANK[d.kind] == best]
        return plan_mesh(world_size, devices)

    # ---- discovery ----------------------------------------------------------------------
    def _candidates(self) -> list[_Candidate]:
        eps = installed_entry_points() if self._entry_points is None else self._entry_points
        found = [
            _Candidate(ep.name, ep.dist.name if ep.dist else None, ep.value, ep.load)
            for ep in eps
            if ep.name not in self._runtime
        ]
        found.extend(self._runtime.values())
        if not any(c.name == "cpu" for c in found):
            found.insert(0, _Candidate("cpu", "kpt-hal", _BUILTIN_CPU, _load_cpu))
        return found

    def _allow_list(self) -> list[str] | None:
        allow = self._allow
        if allow is None:
            return parse_allow_list(os.environ.get(ALLOW_LIST_ENV))
        if isinstance(allow, str):
            return parse_allow_list(allow)
        return list(allow)

    def _discover(self) -> _Snapshot:
        with self._lock:
            if self._snapshot is not None:
                return self._snapshot
            if self._discovering:
                raise RuntimeError(
                    "kpt.hal was queried while discovering adapters: an adapter's import, "
                    "constructor or probe() called adapters()/devices()/select(); it must not"
                )
            self._discovering = True
            try:
                self._snapshot = self._discover_now()
            finally:
                self._discovering = False
            return self._snapshot

    def _discover_now(self) -> _Snapshot:
        with self._lock:
            candidates = self._candidates()
            allow = self._allow_list()
            infos: list[AdapterInfo] = []
            probed: list[tuple[AdapterInfo, Adapter]] = []
            slot_refused: list[AdapterInfo] = []  # lost the PrivateUse1 slot at import
            for candidate in candidates:
                if allow is not None and candidate.name not in allow and candidate.name != "cpu":
                    infos.append(
                        AdapterInfo(
                            candidate.name,
                            candidate.dist,
                            "rejected",
                            f"not in {ALLOW_LIST_ENV}={','.join(allow)}",
                            target=candidate.target,
                        )
                    )
                    continue
                info, adapter = _load_and_probe(candidate)
                if adapter is not None and info.status == "loaded":
                    probed.append((info, adapter))
                elif info.status == "conflict":
                    slot_refused.append(info)
                else:
                    infos.append(info)
            missing = _missing_from_allow_list(allow, candidates)
            for info in missing:
                # Not silent: without it a typo looks like "no accelerator here" (CPU picked).
                warnings.warn(f"{ALLOW_LIST_ENV}: {info.reason}", AllowListWarning, stacklevel=4)
            infos.extend(missing)
            winners, losers = _resolve_conflicts(probed, slot_refused)
            infos.extend(slot_refused)
            infos.extend(losers)
            devices: list[Device] = []
            adapters: dict[str, Adapter] = {}
            for info, adapter in winners:
                info, found = self._enumerate(info, adapter)
                infos.append(info)
                if found:
                    adapters[info.name] = adapter
                    devices.extend(found)
            infos.sort(key=lambda i: (i.name, i.dist or ""))
            return _Snapshot(tuple(infos), adapters, tuple(devices))

    def _enumerate(self, info: AdapterInfo, adapter: Adapter) -> tuple[AdapterInfo, list[Device]]:
        devices, problems = [], []
        for index in range(info.device_count):
            try:
                # capabilities() first: an adapter of a new device type may register it there.
                caps = adapter.capabilities(index)
            except Exception as exc:
                problems.append(f"device {index} refused: capabilities raised {exc!r}")
                continue
            device = Device(
                info.name, index, _known_torch_device(adapter.device_type, index), caps,
                register=adapter.register_device,
            )  # fmt: skip
            devices.append(device)
            self._health[device] = _first_health(adapter, index)
        if not devices:
            return replace(info, status="rejected", reason="; ".join(problems)), []
        reason = "; ".join([info.reason, *problems]) if problems else info.reason
        return replace(info, reason=reason, device_count=len(devices)), devices


def _known_torch_device(device_type: str, index: int) -> torch.device | str:
    """torch.device(device_type, index), or the type's name while torch does not know it
    (a PrivateUse1 backend not registered yet: Device registers it on first use)."""
    try:
        return torch.device(device_type, index)
    except RuntimeError:
        return device_type


def _parse_device_spec(spec: str | torch.device) -> tuple[str, int]:
    """("kpt_sim", 1) for "kpt_sim:1" or torch.device("kpt_sim", 1); no index means 0.

    Parsed by hand: torch.device() refuses a device type not registered yet."""
    if isinstance(spec, torch.device):
        return spec.type, spec.index or 0
    device_type, _, index = str(spec).partition(":")
    if not device_type or (index and not index.isdigit()):
        raise ValueError(f"device {spec!r} is not 'type' or 'type:index' (e.g. 'cuda:1')")
    return device_type, int(index or 0)


def _first_health(adapter: Adapter, index: int) -> HealthReport:
    try:
        return adapter.health(index)
    except Exception as exc:
        return HealthReport(HealthState.FAILED, f"health() raised {exc!r}")


def _load_and_probe(candidate: _Candidate) -> tuple[AdapterInfo, Adapter | None]:
    def rejected(reason: str) -> tuple[AdapterInfo, None]:
        return AdapterInfo(
            candidate.name, candidate.dist, "rejected", reason, target=candidate.target
        ), None

    try:
        loaded = candidate.load()
    except PrivateUse1TakenError as exc:
        # Another adapter registered torch's one PrivateUse1 slot at its import: both want it,
        # so both are in conflict (_resolve_conflicts marks the holder), neither is "second".
        return AdapterInfo(
            candidate.name, candidate.dist, "conflict",
            f"claims the PrivateUse1 slot, also claimed by another adapter ({exc}); set "
            f"{ALLOW_LIST_ENV} to choose one", target=candidate.target,
        ), None  # fmt: skip
    except Exception as exc:
        return rejected(f"import of {candidate.target} failed: {exc!r}")
    try:
        adapter = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:
        return rejected(f"constructing {candidate.target} raised {exc!r}")
    if not isinstance(adapter, Adapter):
        return rejected(f"{candidate.target} is {type(adapter).__name__}, not a kpt.hal.Adapter")
    device_type = getattr(adapter, "device_type", None)
    if not isinstance(device_type, str) or not device_type:
        return rejected(f"{candidate.target} sets no device_type (e.g. 'cuda', 'kpt_sim')")
    try:
        probe = adapter.probe()
    except PrivateUse1TakenError as exc:  # the slot is held by a backend it would displace
        return AdapterInfo(
            candidate.name, candidate.dist, "conflict",
            f"claims the PrivateUse1 slot, held by another backend ({exc}); set "
            f"{ALLOW_LIST_ENV} to choose one", device_type, target=candidate.target,
        ), None  # fmt: skip
    except Exception as exc:
        return rejected(f"probe raised {exc!r}")
    if probe.count <= 0:
        what = f" (looked for {probe.looked_for})" if probe.looked_for else ""
        reason = (probe.reason or "probe found no devices") + what
        info = AdapterInfo(
            candidate.name,
            candidate.dist,
            "no-hardware",
            reason,
            device_type,
            0,
            candidate.target,
            probe.looked_for,
        )
        return info, adapter
    info = AdapterInfo(
        candidate.name, candidate.dist, "loaded", "", device_type, probe.count, candidate.target
    )
    return info, adapter


def _missing_from_allow_list(
    allow: list[str] | None, candidates: list[_Candidate]
) -> list[AdapterInfo]:
    if allow is None:
        return []
    known = {c.name for c in candidates}
    installed = ", ".join(sorted(known))
    return [
        AdapterInfo(
            name,
            None,
            "rejected",
            f"{name} not found: misspelled or not installed (installed: {installed})",
        )
        for name in dict.fromkeys(allow)
        if name not in known
    ]


def _resolve_conflicts(
    probed: list[tuple[AdapterInfo, Adapter]],
    slot_refused: Sequence[AdapterInfo] = (),
) -> tuple[list[tuple[AdapterInfo, Adapter]], list[AdapterInfo]]:
    """Adapters with hardware that claim the same name, device type or PrivateUse1 all lose.

    ``slot_refused`` are adapters whose import was refused the PrivateUse1 slot (another one
    took it at its own import): every probed adapter that uses the slot is in conflict with
    them."""
    claims: dict[str, list[int]] = defaultdict(list)
    for i, (info, adapter) in enumerate(probed):
        claims[f"adapter name {info.name!r}"].append(i)
        claims[f"torch device type {adapter.device_type!r}"].append(i)
        if getattr(adapter, "uses_privateuse1", False):
            claims["the PrivateUse1 slot"].append(i)
    why: dict[int, list[str]] = defaultdict(list)
    if slot_refused:
        refused = ", ".join(f"{info.name} ({info.dist})" for info in slot_refused)
        for i in claims.get("the PrivateUse1 slot", []):
            why[i].append(f"claims the PrivateUse1 slot, also claimed by {refused}")
    for claim, owners in claims.items():
        if len(owners) < 2:
            continue
        for i in owners:
            others = ", ".join(
                f"{probed[j][0].name} ({probed[j][0].dist})" for j in owners if j != i
            )
            why[i].append(f"claims {claim}, also claimed by {others}")
    winners, losers = [], []
    for i, (info, adapter) in enumerate(probed):
        if i in why:
            reason = "; ".join(why[i]) + f"; set {ALLOW_LIST_ENV} to choose one"
            losers.append(replace(info, status="conflict", reason=reason))
        else:
            winners.append((info, adapter))
    return winners, losers
