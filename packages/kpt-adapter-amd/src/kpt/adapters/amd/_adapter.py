"""The AMD adapter: torch.cuda on HIP builds, told apart from CUDA by torch.version.hip."""

from __future__ import annotations

from typing import Any

import torch

from kpt.hal import Capabilities, HealthReport, TorchDeviceAdapter


class AmdAdapter(TorchDeviceAdapter):
    """AMD Instinct and Radeon GPUs: torch.cuda (HIP), RCCL (as "nccl"), amdsmi for health."""

    name = "amd"
    device_type = "cuda"  # ROCm builds of torch reuse the cuda device type
    vendor = "amd"
    looked_for = "AMD GPUs through torch.cuda on a ROCm (HIP) build of torch"
    max_temperature_c = 100.0  # hotspot sensor, which runs hotter than NVIDIA's GPU sensor

    def __init__(self, backend: Any = None, telemetry: Any = None, version: Any = None) -> None:
        super().__init__(backend, telemetry)
        self._version = version if version is not None else torch.version
        self._telemetry_tried = telemetry is not None

    def _refusal(self) -> str | None:
        if not getattr(self._version, "hip", None):
            cuda = getattr(self._version, "cuda", None)
            if cuda:  # an NVIDIA machine: the nvidia adapter serves it, nothing to install
                return (
                    f"torch.version.hip is None: this torch is a CUDA build "
                    f"(torch.version.cuda={cuda!r}), not a ROCm build"
                )
            return (
                "torch.version.hip is None: this torch is a CPU-only build, not a ROCm build; "
                "for AMD GPUs install a ROCm build of torch (https://pytorch.org/get-started/locally)"
            )
        return None

    def _ensure_telemetry(self) -> None:
        # amdsmi is loaded on first use after a successful probe, never during probe().
        if not self._telemetry_tried:
            self._telemetry_tried = True
            from kpt.adapters.amd._smi import AmdSmiTelemetry

            self.telemetry = AmdSmiTelemetry.load()

    def capabilities(self, index: int) -> Capabilities:
        self._ensure_telemetry()
        return super().capabilities(index)

    def health(self, index: int) -> HealthReport:
        self._ensure_telemetry()
        return super().health(index)

    def _model_key(self, props: Any) -> str:
        # Names can be empty or generic on ROCm; the gfx arch ("gfx942:sramecc+") is not.
        arch = str(getattr(props, "gcnArchName", "")).split(":")[0]
        return f"{getattr(props, 'name', '')} {arch}".strip()

    def _runtime_version(self) -> str:
        return f"HIP {self._version.hip}"

    def _extra_features(self, index: int, props: Any) -> set[str]:
        return {"graphs", "bf16"}

    def collectives_backend(self) -> str | None:
        import torch.distributed as dist

        # RCCL registers under the name "nccl" on ROCm builds.
        return "nccl" if dist.is_available() and dist.is_nccl_available() else None

    def triton_target(self) -> str | None:
        return "hip"
