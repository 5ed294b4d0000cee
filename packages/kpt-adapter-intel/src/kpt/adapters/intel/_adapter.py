"""The Intel adapter: torch.xpu for devices, XCCL (built in) or oneCCL bindings for collectives."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from kpt.hal import TorchDeviceAdapter


class IntelAdapter(TorchDeviceAdapter):
    """Intel Data Center GPU Max / Arc: torch.xpu, xccl or ccl, Triton "xpu"."""

    name = "intel"
    device_type = "xpu"
    vendor = "intel"
    looked_for = "Intel GPUs through torch.xpu (torch built with XPU support)"

    def __init__(self, backend: Any = None, telemetry: Any = None) -> None:
        super().__init__(backend, telemetry)

    def _refusal(self) -> str | None:
        if self._backend is not None:
            return None  # an injected backend (tests) speaks for itself
        if not hasattr(torch, "xpu"):
            return f"torch {torch.__version__} has no torch.xpu module (needs torch>=2.4)"
        is_compiled = getattr(torch.xpu, "_is_compiled", None)
        if callable(is_compiled) and not is_compiled():
            # Without this, a CPU-only torch reads as "no device visible", which sends
            # people hunting for driver problems that are not there.
            return (
                f"torch {torch.__version__} is built without XPU support; install an XPU "
                "build of torch (https://pytorch.org/get-started/locally)"
            )
        return None

    def _driver_version(self) -> str:
        try:
            return str(getattr(self.backend.get_device_properties(0), "driver_version", ""))
        except Exception:
            return super()._driver_version()

    def _runtime_version(self) -> str:
        return f"XPU (torch {torch.__version__})"

    def _extra_features(self, index: int, props: Any) -> set[str]:
        features = set()
        if getattr(props, "has_fp64", True) is False:
            features.add("no-fp64")  # Arc boards: float64 is emulated or missing
        if getattr(props, "has_bfloat16_conversions", False):
            features.add("bf16")
        return features

    def capabilities(self, index: int):
        caps = super().capabilities(index)
        if "no-fp64" in caps.features:
            from dataclasses import replace

            return replace(caps, dtypes=caps.dtypes - {"float64"})
        return caps

    def collectives_backend(self) -> str | None:
        import torch.distributed as dist

        if dist.is_available() and getattr(dist, "is_xccl_available", lambda: False)():
            return "xccl"
        if importlib.util.find_spec("oneccl_bindings_for_pytorch") is not None:
            return "ccl"
        return None

    def triton_target(self) -> str | None:
        return "xpu"
