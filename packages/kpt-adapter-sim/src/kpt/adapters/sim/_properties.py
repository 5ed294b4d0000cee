"""torch.kpt_sim.get_device_properties / get_device_capability: CUDA-shaped device records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# (major, minor) as torch reports for the real chip a profile models (ROCm reports gfx942 as
# 9.4). A chip without one reports 8.0: code that gates bf16 or TF32 on capability >= (8, 0)
# then takes the paths kpt_sim runs (it computes bf16 and fp16).
_CAPABILITY_BY_MODEL = (("H200", (9, 0)), ("H100", (9, 0)), ("A100", (8, 0)),
                        ("B200", (10, 0)), ("MI300", (9, 4)), ("MI250", (9, 0)))  # fmt: skip
DEFAULT_CAPABILITY = (8, 0)


def capability_of(model: str) -> tuple[int, int]:
    for key, capability in _CAPABILITY_BY_MODEL:
        if key in model.upper():
            return capability
    return DEFAULT_CAPABILITY


@dataclass(frozen=True)
class DeviceProperties:
    """What torch.cuda.get_device_properties gives, for one simulated device.

    ``profile`` names the chip profile; ``details`` holds every field the simulator reported
    (peak rates, bandwidths, daemon_index, ...), also readable as attributes.
    """

    name: str
    total_memory: int
    multi_processor_count: int
    major: int
    minor: int
    vendor: str
    profile: str
    details: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_simulated(self) -> bool:
        return True

    def __getattr__(self, key: str) -> Any:
        details = self.__dict__.get("details") or {}
        if key in details:
            return details[key]
        raise AttributeError(f"kpt_sim device properties have no {key!r}; known: {sorted(details)}")


def device_properties(info: dict[str, Any]) -> DeviceProperties:
    model = str(info.get("model") or info.get("profile") or "kpt_sim")
    major, minor = capability_of(model)
    return DeviceProperties(
        name=model,
        total_memory=int(info.get("memory_total") or 0),
        multi_processor_count=int(info.get("compute_units") or 0),
        major=major,
        minor=minor,
        vendor=str(info.get("vendor") or "kpt"),
        profile=str(info.get("profile") or ""),
        details=dict(info),
    )
