"""The ``sim`` adapter for kpt.hal: the simulator's devices as kpt devices."""

from __future__ import annotations

import importlib.util
import os

from kpt.hal import Adapter, Capabilities, HealthReport, HealthState, Probe, Value

_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64", "int64", "int32", "int8",
                     "uint8", "bool"})  # fmt: skip


class SimAdapter(Adapter):
    """Devices of a kpt-sim daemon, through the kpt_sim PyTorch device."""

    name = "sim"
    device_type = "kpt_sim"
    uses_privateuse1 = True

    def probe(self) -> Probe:
        # Never starts a daemon: counts what the environment describes.
        if importlib.util.find_spec("kpt.sim") is None:
            return Probe.none("kpt-sim is not installed", "the kpt-sim simulator")
        import kpt.adapters.sim  # noqa: F401  (registers the device)
        from kpt.adapters.sim import _runtime

        if _runtime.is_started():
            return Probe.found(len(_runtime.runtime().devices), "a connected kpt-sim daemon")
        where = os.environ.get("KPT_SIM_ENDPOINT") or "an embedded kpt-sim daemon (started on use)"
        return Probe.found(_runtime.embedded_device_count(), where)

    def _info(self, index: int) -> dict:
        from kpt.adapters.sim._runtime import runtime

        rt = runtime()
        return rt.devices[rt.check_device(index)]

    def capabilities(self, index: int) -> Capabilities:
        info = self._info(index)
        import torch

        free, total = torch.kpt_sim.mem_get_info(index)
        peaks = {
            key.removeprefix("peak_flops_"): Value(float(v), "FLOP/s", "nominal")
            for key, v in info.items()
            if key.startswith("peak_flops_") and isinstance(v, int | float)
        }
        bandwidth = info.get("memory_bandwidth") or info.get("hbm_bandwidth")
        return Capabilities(
            vendor=str(info.get("vendor", "kpt")),
            model=str(info.get("model", info.get("profile", "sim"))),
            index=index,
            memory_total=int(total),
            memory_free=int(free),
            peak_flops=peaks,
            memory_bandwidth=Value(float(bandwidth), "B/s", "nominal") if bandwidth else None,
            dtypes=_DTYPES,
            driver_version=f"kpt-sim profile {info.get('profile', '?')}",
            runtime_version="kpt-adapter-sim",
            features=frozenset({"simulated", "events", "streams", "triton-interpreter"}),
        )

    def health(self, index: int) -> HealthReport:
        import torch

        try:
            free, total = torch.kpt_sim.mem_get_info(index)
        except Exception as exc:  # a dead daemon is a failed device, with the reason
            return HealthReport(HealthState.FAILED, f"{type(exc).__name__}: {exc}")
        return HealthReport(
            HealthState.HEALTHY, "", {"memory_free": float(free), "memory_total": float(total)}
        )

    def collectives_backend(self) -> str | None:
        return "kpt"

    def triton_target(self) -> str | None:
        return None

    def memory_info(self, index: int) -> tuple[int, int]:
        import torch

        return torch.kpt_sim.mem_get_info(index)

    def synchronize(self, index: int) -> None:
        import torch

        torch.kpt_sim.synchronize(index)
