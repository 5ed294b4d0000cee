"""The NVIDIA adapter: CUDA builds of torch only; ROCm builds belong to the amd adapter."""

from __future__ import annotations

from typing import Any

import torch

from kpt.hal import Capabilities, HealthReport, Interconnect, Link, TorchDeviceAdapter


def _pci_bus_id(props: Any) -> str:
    try:
        return f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    except (AttributeError, TypeError, ValueError):
        return ""


class NvidiaAdapter(TorchDeviceAdapter):
    """NVIDIA GPUs: torch.cuda for devices, NCCL for collectives, NVML for health."""

    name = "nvidia"
    device_type = "cuda"
    vendor = "nvidia"
    looked_for = "NVIDIA GPUs through torch.cuda on a CUDA build of torch"

    def __init__(self, backend: Any = None, telemetry: Any = None, version: Any = None) -> None:
        super().__init__(backend, telemetry)
        self._version = version if version is not None else torch.version
        self._telemetry_tried = telemetry is not None

    def _refusal(self) -> str | None:
        hip = getattr(self._version, "hip", None)
        if hip:
            return (
                f"this torch is a ROCm build (torch.version.hip={hip!r}); the amd adapter serves it"
            )
        if not getattr(self._version, "cuda", None):
            return (
                "this torch has no CUDA support (torch.version.cuda is None: a CPU-only build); "
                "install a CUDA build of torch (https://pytorch.org/get-started/locally)"
            )
        return None

    def _ensure_telemetry(self) -> None:
        # NVML is loaded on first use after a successful probe, never during probe().
        if not self._telemetry_tried:
            self._telemetry_tried = True
            count = int(self.backend.device_count())
            bus_ids = [_pci_bus_id(self.backend.get_device_properties(i)) for i in range(count)]
            from kpt.adapters.nvidia._nvml import NvmlTelemetry

            self.telemetry = NvmlTelemetry.load(bus_ids)

    def capabilities(self, index: int) -> Capabilities:
        self._ensure_telemetry()
        return super().capabilities(index)

    def health(self, index: int) -> HealthReport:
        self._ensure_telemetry()
        return super().health(index)

    def _interconnect(self, index: int, count: int, link: Link | None) -> Interconnect:
        # NVML knows which GPUs share NVLink; without it, claim no peers rather than guess.
        peers: frozenset[int] = frozenset()
        if self.telemetry is not None and hasattr(self.telemetry, "nvlink_peers"):
            try:
                peers = self.telemetry.nvlink_peers(index, count)
            except Exception:
                peers = frozenset()
        links = (link,) if link and (peers or link.kind != "nvlink") else ()
        return Interconnect(links=links, peers=peers)

    def _runtime_version(self) -> str:
        return f"CUDA {self._version.cuda}"

    def _extra_features(self, index: int, props: Any) -> set[str]:
        major = int(getattr(props, "major", 0))
        features = {"graphs"}
        if major >= 8:
            features |= {"bf16", "tf32"}
        if (major, int(getattr(props, "minor", 0))) >= (8, 9):
            features.add("fp8")
        return features

    def collectives_backend(self) -> str | None:
        import torch.distributed as dist

        return "nccl" if dist.is_available() and dist.is_nccl_available() else None

    def triton_target(self) -> str | None:
        return "cuda"
