"""select(**needs): the best device meeting every need, or an error saying why each failed."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from kpt.hal._types import Device, HealthReport, HealthState, NoDeviceError

NEEDS = (
    "adapter",
    "device_type",
    "dtype",
    "feature",
    "healthy",
    "min_memory",
    "simulated",
    "vendor",
)

# Among devices meeting the needs, the kind decides first. Real hardware beats a simulator
# modelling it (a simulator's figures are those of the chip it models, so ranking by rate
# alone could pick it over the real thing), and a simulator beats the host so that code
# written for an accelerator runs on one in CI. Ask for the simulator with adapter="sim"
# or simulated=True; refuse it with simulated=False.
KIND_RANK = {"accelerator": 2, "simulated": 1, "host": 0}

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(amount: int | float | str) -> int:
    """16 * 2**30, "16GiB" or "80 GB" -> bytes."""
    if isinstance(amount, bool):
        raise TypeError(f"min_memory={amount!r} is a bool; give bytes or a string like '16GiB'")
    if isinstance(amount, int | float):
        if amount < 0:
            raise ValueError(f"min_memory={amount!r} is negative; give bytes >= 0")
        return int(amount)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(amount))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"min_memory={amount!r} is not a size; write bytes or e.g. '16GiB', '80GB', '512MiB'"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def dtype_name(dtype: torch.dtype | str) -> str:
    """torch.bfloat16 or "bfloat16" or "torch.bfloat16" -> "bfloat16"."""
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    if isinstance(dtype, str) and dtype:
        return dtype.removeprefix("torch.")
    raise TypeError(f"dtype={dtype!r} is neither a torch.dtype nor a dtype name like 'bfloat16'")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _normalize(needs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(needs) - set(NEEDS))
    if unknown:
        raise TypeError(f"select() got unknown needs {unknown}; known needs: {', '.join(NEEDS)}")
    out = dict(needs)
    if "min_memory" in out:
        out["min_memory"] = parse_bytes(out["min_memory"])
    if "dtype" in out:
        out["dtype"] = dtype_name(out["dtype"])
    if "simulated" in out and not isinstance(out["simulated"], bool):
        raise TypeError(
            f"simulated={out['simulated']!r} is not a bool; give True (only simulated devices) "
            "or False (never a simulated device)"
        )
    if "feature" in out:
        feature = out["feature"]
        out["feature"] = frozenset([feature] if isinstance(feature, str) else feature)
    return out


@functools.lru_cache(maxsize=256)
def _normalized_cached(items: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return _normalize(dict(items))


def _normalized(needs: dict[str, Any]) -> dict[str, Any]:
    """_normalize, cached: the same needs are asked for again and again."""
    try:
        return _normalized_cached(tuple(sorted(needs.items())))
    except TypeError:  # an unhashable value, e.g. feature=["fp8"]
        return _normalize(needs)


def refusals_for(device: Device, report: HealthReport, needs: dict[str, Any]) -> list[str]:
    """Every need `device` fails, in words; empty when it meets them all."""
    caps = device.capabilities
    why = []
    if report.state == HealthState.FAILED:
        why.append(f"health failed: {report.reason or 'no reason given'}")
    elif needs.get("healthy") and report.state != HealthState.HEALTHY:
        why.append(f"health {report.state.value}, healthy=True asked: {report.reason}")
    if "adapter" in needs and device.adapter != needs["adapter"]:
        why.append(f"adapter {device.adapter!r}, not {needs['adapter']!r}")
    if "device_type" in needs and device.device_type != needs["device_type"]:
        why.append(f"device type {device.device_type!r}, not {needs['device_type']!r}")
    if "vendor" in needs and caps.vendor.lower() != str(needs["vendor"]).lower():
        why.append(f"vendor {caps.vendor!r}, not {needs['vendor']!r}")
    if "min_memory" in needs and caps.memory_total < needs["min_memory"]:
        why.append(f"memory {_gib(caps.memory_total)} < {_gib(needs['min_memory'])} needed")
    if "dtype" in needs and needs["dtype"] not in caps.dtypes:
        why.append(f"dtype {needs['dtype']} not supported")
    if "simulated" in needs and caps.simulated != needs["simulated"]:
        why.append("simulated, simulated=False asked" if caps.simulated else "not simulated")
    missing = sorted(needs.get("feature", frozenset()) - caps.features)
    if missing:
        why.append(f"lacks feature(s) {', '.join(missing)}")
    return why


def select_device(
    devices: Sequence[Device],
    health: Mapping[Device, HealthReport],
    needs: dict[str, Any],
    unchecked: HealthReport,
) -> Device:
    """The best of `devices` meeting `needs`: by kind (accelerator, simulated, host; see
    KIND_RANK), then healthy before degraded, then fastest, then largest, then lowest index.

    The loop is the hot path (<= 50 us over 16 devices): plain comparisons only; the words
    explaining refusals are built only when nothing qualifies.
    """
    wanted = _normalized(needs)
    adapter = wanted.get("adapter")
    device_type = wanted.get("device_type")
    vendor = str(wanted["vendor"]).lower() if "vendor" in wanted else None
    min_memory = wanted.get("min_memory", 0)
    dtype = wanted.get("dtype")
    features = wanted.get("feature")
    healthy_only = bool(wanted.get("healthy"))
    simulated = wanted.get("simulated")
    kind_rank = KIND_RANK
    failed, healthy = HealthState.FAILED, HealthState.HEALTHY
    best, best_rank = None, None
    report_of = health.get
    for device in devices:
        state = report_of(device, unchecked).state
        if state is failed or (healthy_only and state is not healthy):
            continue
        caps = device.capabilities
        if (
            (adapter is not None and device.adapter != adapter)
            or (device_type is not None and device.device_type != device_type)
            or (vendor is not None and caps.vendor.lower() != vendor)
            or caps.memory_total < min_memory
            or (dtype is not None and dtype not in caps.dtypes)
            or (features and not features <= caps.features)
            or (simulated is not None and caps.simulated != simulated)
        ):
            continue
        rates = caps.peak_flops
        rate = rates[dtype].amount if dtype in rates else caps.top_flops
        rank = (
            kind_rank[device.kind],
            state is healthy,
            rate,
            caps.memory_total,
            -device.index,
        )
        if best_rank is None or rank > best_rank:
            best, best_rank = device, rank
    if best is None:
        refusals = {str(d): refusals_for(d, report_of(d, unchecked), wanted) for d in devices}
        raise NoDeviceError(needs, refusals)
    return best
