"""NVML (nvidia-ml-py) as a kpt.hal Telemetry source; absent library or driver means None."""

from __future__ import annotations

from typing import Any


class NvmlTelemetry:
    """Temperature, power, ECC and memory from NVML, devices found by PCI bus id."""

    def __init__(self, pynvml: Any, bus_ids: list[str] | None = None) -> None:
        self._nvml = pynvml
        self._bus_ids = bus_ids or []  # torch index -> PCI bus id, so CUDA_VISIBLE_DEVICES holds

    @classmethod
    def load(cls, bus_ids: list[str] | None = None) -> NvmlTelemetry | None:
        """NVML if nvidia-ml-py is installed and the driver answers, else None."""
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:  # no driver on this machine
            return None
        return cls(pynvml, bus_ids)

    def _handle(self, index: int) -> Any:
        if index < len(self._bus_ids) and self._bus_ids[index]:
            return self._nvml.nvmlDeviceGetHandleByPciBusId(self._bus_ids[index])
        return self._nvml.nvmlDeviceGetHandleByIndex(index)

    def driver_version(self) -> str:
        version = self._nvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)

    def memory(self, index: int) -> tuple[int, int] | None:
        info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle(index))
        return int(info.free), int(info.total)

    def nvlink_peers(self, index: int, count: int) -> frozenset[int]:
        """Indices of the other visible GPUs that `index` reaches over NVLink."""
        if count <= 1:
            return frozenset()
        nvml, handle = self._nvml, self._handle(index)
        peers = set()
        for other in range(count):
            if other == index:
                continue
            status = nvml.nvmlDeviceGetP2PStatus(
                handle, self._handle(other), nvml.NVML_P2P_CAPS_INDEX_NVLINK
            )
            if status == nvml.NVML_P2P_STATUS_OK:
                peers.add(other)
        return frozenset(peers)

    def readings(self, index: int) -> dict[str, float]:
        nvml, handle = self._nvml, self._handle(index)
        readings = {
            "temperature_c": float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        }
        try:
            readings["power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except nvml.NVMLError:
            pass  # not every board reports power
        try:
            readings["ecc_uncorrectable"] = float(
                nvml.nvmlDeviceGetTotalEccErrors(
                    handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
                )
            )
        except nvml.NVMLError:
            pass  # ECC off or unsupported (consumer boards)
        return readings
