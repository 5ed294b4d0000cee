"""amdsmi as a kpt.hal Telemetry source; absent library or driver means None."""

from __future__ import annotations

from typing import Any


class AmdSmiTelemetry:
    """Hotspot temperature, power and memory from amdsmi, devices in amdsmi's order."""

    def __init__(self, amdsmi: Any) -> None:
        self._smi = amdsmi
        self._handles = amdsmi.amdsmi_get_processor_handles()

    @classmethod
    def load(cls) -> AmdSmiTelemetry | None:
        """amdsmi if installed and the driver answers, else None."""
        try:
            import amdsmi
        except ImportError:
            return None
        try:
            amdsmi.amdsmi_init()
            return cls(amdsmi)
        except Exception:  # no amdgpu driver on this machine
            return None

    def driver_version(self) -> str:
        info = self._smi.amdsmi_get_gpu_driver_info(self._handles[0])
        return str(info.get("driver_version", "")) if isinstance(info, dict) else ""

    def memory(self, index: int) -> tuple[int, int] | None:
        smi, handle = self._smi, self._handles[index]
        total = smi.amdsmi_get_gpu_memory_total(handle, smi.AmdSmiMemoryType.VRAM)
        used = smi.amdsmi_get_gpu_memory_usage(handle, smi.AmdSmiMemoryType.VRAM)
        return int(total) - int(used), int(total)

    def readings(self, index: int) -> dict[str, float]:
        smi, handle = self._smi, self._handles[index]
        temperature = smi.amdsmi_get_temp_metric(
            handle, smi.AmdSmiTemperatureType.HOTSPOT, smi.AmdSmiTemperatureMetric.CURRENT
        )
        readings = {"temperature_c": float(temperature)}
        try:
            power = smi.amdsmi_get_power_info(handle)
            readings["power_w"] = float(power.get("current_socket_power", 0))
        except Exception:
            pass  # not every board reports power
        return readings
