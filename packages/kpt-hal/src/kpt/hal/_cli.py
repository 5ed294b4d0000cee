"""`kpt devices`, `kpt doctor` and `kpt metrics`: what is here, why each adapter is or is not
used, and every device's health, memory and utilization for Prometheus."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from kpt.hal._discovery import ALLOW_LIST_ENV, ENTRY_POINT_GROUP, AllowListWarning, Registry
from kpt.hal._types import AdapterInfo, Device, NoDeviceError, Value

_STATUS_MARK = {"loaded": "ok", "no-hardware": "--", "rejected": "!!", "conflict": "!!"}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Value):
        return {"amount": obj.amount, "unit": obj.unit, "source": obj.source}
    if isinstance(obj, Device):  # by name: reading torch_device would register its type
        return {"adapter": obj.adapter, "index": obj.index, "torch_device": obj.name,
                "capabilities": _jsonable(obj.capabilities), "device_type": obj.device_type,
                "kind": obj.kind}  # fmt: skip
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, frozenset | set):
        return sorted(_jsonable(x) for x in obj)
    if isinstance(obj, list | tuple):
        return [_jsonable(x) for x in obj]
    if hasattr(obj, "items"):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj


def device_record(registry: Registry, device: Device) -> dict[str, Any]:
    record = _jsonable(device)
    record["health"] = _jsonable(registry.health(device))
    return record


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _model(device: Device) -> str:
    """ "AMD EPYC", not "amd AMD EPYC": the vendor only where the model does not name it."""
    caps = device.capabilities
    if caps.vendor and not caps.model.lower().startswith(caps.vendor.lower()):
        return f"{caps.vendor} {caps.model}"
    return caps.model


def _default_pick(registry: Registry) -> Device | None:
    try:
        return registry.select()
    except NoDeviceError:
        return None


def _devices_text(registry: Registry) -> str:
    pick = _default_pick(registry)
    header = f"  {'device':<12} {'adapter':<8} {'kind':<11} {'health':<9} {'memory':>10}  model"
    lines = [header]
    for device in registry.devices():
        health = registry.health(device)
        mark = "*" if device == pick else " "
        # The kind column matters: a simulated H100 reports the model name of a real one.
        lines.append(
            f"{mark} {device.name:<12} {device.adapter:<8} {device.kind:<11} "
            f"{health.state.value:<9} {_gib(device.capabilities.memory_total):>10}  "
            f"{_model(device)}"
        )
        if health.state.value != "healthy" and health.reason:
            lines.append(f"    {health.state.value}: {health.reason}")
    lines.append(_pick_line(pick))
    return "\n".join(lines)


def _pick_line(pick: Device | None, mark: str = "*") -> str:
    if pick is None:
        return f"{mark} hal.select() finds no device: every one failed its health check"
    line = f"{mark} hal.select() with no needs picks {pick.name} ({pick.kind})"
    if pick.kind == "simulated":
        line += "; no real accelerator here. Refuse simulators with select(simulated=False)"
    elif pick.kind == "host":
        line += "; no accelerator here (see `kpt doctor` for why each adapter found none)"
    return line


def _left_out(registry: Registry, info: AdapterInfo) -> bool:
    """Rejected only because KPT_ADAPTERS leaves it out: the user's choice, not a problem."""
    allow = registry._allow_list()
    return info.status == "rejected" and allow is not None and info.name not in allow


def _explain(info: AdapterInfo, kinds: set[str]) -> str:
    if info.status == "loaded":
        simulated = ", simulated" if kinds == {"simulated"} else ""
        return f"loaded: {info.device_count} {info.device_type} device(s){simulated}" + (
            f" ({info.reason})" if info.reason else ""
        )
    if info.status == "no-hardware":
        # `kpt doctor` prints what was looked for on a line of its own.
        return f"no hardware: {info.reason.removesuffix(f' (looked for {info.looked_for})')}"
    return f"{info.status}: {info.reason}"


def _doctor_text(registry: Registry) -> str:
    allow = os.environ.get(ALLOW_LIST_ENV)
    allowed = f"{ALLOW_LIST_ENV}={allow!r}" if allow else f"{ALLOW_LIST_ENV} unset (all allowed)"
    lines = [f"kpt doctor: torch {torch.__version__}, group {ENTRY_POINT_GROUP!r}, {allowed}"]
    kinds: dict[str, set[str]] = {}
    for device in registry.devices():
        kinds.setdefault(device.adapter, set()).add(device.kind)
    for info in registry.adapters():
        source = f"{info.dist or 'not installed'} {info.target}".strip()
        if _left_out(registry, info):
            mark, explained = "--", f"left out: {info.reason}"
        else:
            mark, explained = _STATUS_MARK[info.status], _explain(info, kinds.get(info.name, set()))
        lines.append(f"[{mark}] {info.name:<8} {explained}")
        if info.status == "no-hardware" and info.looked_for:
            lines.append(f"     looked for {info.looked_for}")
        lines.append(f"     from {source}")
    for device in registry.devices():
        health = registry.health(device)
        if health.state.value != "healthy":
            lines.append(f"[!!] {device.name} is {health.state.value}: {health.reason}")
    lines.append(_pick_line(_default_pick(registry), mark="=>"))
    return "\n".join(lines)


def _unknown_allowed(registry: Registry) -> list[AdapterInfo]:
    """Names in KPT_ADAPTERS that no installed adapter has (a typo, or not installed)."""
    allow = registry._allow_list() or []
    return [
        info
        for info in registry.adapters()
        if info.status == "rejected" and info.dist is None and info.name in allow
    ]


def _problems(registry: Registry) -> int:
    return sum(
        info.status in ("rejected", "conflict") and not _left_out(registry, info)
        for info in registry.adapters()
    )


def main(argv: Sequence[str] | None = None, registry: Registry | None = None) -> int:
    """The `kpt-hal` command on `argv`; its arguments are defined in kpt._hal_command."""
    from kpt._hal_command import build_parser

    return run(build_parser().parse_args(argv), registry)


def run(args: argparse.Namespace, registry: Registry | None = None) -> int:
    if registry is None:
        import kpt.hal

        registry = kpt.hal.registry()
    with warnings.catch_warnings():  # each command says it in its own words, on its own line
        warnings.simplefilter("ignore", AllowListWarning)
        registry.adapters()  # discovery runs here
    if args.command == "metrics":
        return _serve_metrics(registry, args.host, args.port)
    if args.command == "devices":
        if args.json:
            print(json.dumps([device_record(registry, d) for d in registry.devices()], indent=2))
        else:
            print(_devices_text(registry))
        unknown = _unknown_allowed(registry)
        for info in unknown:
            print(f"kpt devices: {ALLOW_LIST_ENV}: {info.reason}", file=sys.stderr)
        # A misspelled adapter must not pass as "no accelerator here" in a script or CI.
        return 1 if unknown else 0
    if args.json:
        report = {
            "torch": torch.__version__,
            "allow_list": os.environ.get(ALLOW_LIST_ENV),
            "adapters": [_jsonable(info) for info in registry.adapters()],
            "devices": [device_record(registry, d) for d in registry.devices()],
        }
        print(json.dumps(report, indent=2))
    else:
        print(_doctor_text(registry))
    # Non-zero when something was refused, so CI can fail on a broken or misspelled adapter;
    # adapters KPT_ADAPTERS leaves out on purpose do not count.
    return 1 if _problems(registry) else 0


def _serve_metrics(registry: Registry, host: str, port: int) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM); 2 when it cannot start."""
    from kpt.hal._metrics import MetricsExporter

    try:
        exporter = MetricsExporter(registry, host, port).start()
    except (ImportError, OSError, ValueError) as exc:
        print(f"kpt metrics: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()  # signal() needs it
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main else None
    devices = registry.devices()
    adapters = sorted({d.adapter for d in devices})
    print(
        f"kpt metrics: {len(devices)} device(s) of adapter(s) {', '.join(adapters) or 'none'} "
        f"on {exporter.url} (Ctrl-C stops)",
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        exporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
