"""The host CPU as a kpt device, so every machine has at least one."""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

import torch

from kpt.hal._adapter import COMMON_DTYPES, Adapter
from kpt.hal._types import Capabilities, HealthReport, HealthState, Probe

_LOW_MEMORY_FRACTION = 0.05  # below this share of RAM available, the host is degraded


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes; empty where there is no /proc (macOS, Windows)."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return {}
    info = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            info[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return info


def _cpu_identity() -> tuple[str, str]:
    vendor, model = "", platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "vendor_id" and not vendor:
            vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(value, value.lower())
        elif key == "model name" and value:
            model = value
            break
    if not vendor:
        vendor = "arm" if platform.machine().lower() in ("arm64", "aarch64") else "unknown"
    return vendor, model or "cpu"


def _memory() -> tuple[int, int]:
    info = _meminfo()
    total = info.get("MemTotal")
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 0
    return info.get("MemAvailable", total), total


class CpuAdapter(Adapter):
    """The host processor: always present, gloo collectives, Triton through its interpreter."""

    name = "cpu"
    device_type = "cpu"

    def probe(self) -> Probe:
        return Probe.found(1, "the host CPU (always present)")

    def capabilities(self, index: int) -> Capabilities:
        if index != 0:
            raise IndexError(f"cpu index {index} does not exist; the host CPU is index 0")
        vendor, model = _cpu_identity()
        free, total = _memory()
        features = {"threads"}
        if importlib.util.find_spec("triton") is not None:
            features.add("triton-interpreter")
        return Capabilities(
            vendor=vendor,
            model=model,
            index=0,
            memory_total=total,
            memory_free=free,
            dtypes=COMMON_DTYPES | {"float64", "int16", "uint8", "complex64"},
            driver_version=platform.release(),
            runtime_version=f"torch {torch.__version__}",
            features=frozenset(features),
        )

    def health(self, index: int) -> HealthReport:
        free, total = _memory()
        readings = {"memory_free": float(free), "memory_total": float(total)}
        if hasattr(os, "getloadavg"):
            readings["load_1m"] = os.getloadavg()[0]
        if total and free / total < _LOW_MEMORY_FRACTION:
            return HealthReport(
                HealthState.DEGRADED,
                f"only {free / total:.1%} of host memory available",
                readings,
            )
        return HealthReport(HealthState.HEALTHY, "", readings)

    def collectives_backend(self) -> str | None:
        return "gloo"

    def triton_target(self) -> str | None:
        return None

    def memory_info(self, index: int) -> tuple[int, int]:
        return _memory()

    def synchronize(self, index: int) -> None:
        return None  # CPU ops complete before they return
