"""The ``sim`` adapter for kpt.hal: the simulator's devices as kpt devices.

Probe, capabilities, memory and health come from profile files or a running daemon and never
touch torch's device registry; ``register_device`` (called by kpt.hal on the first read of a
kpt_sim Device's ``torch_device``) and the methods that use the device import
``kpt.adapters.sim``, which registers ``kpt_sim``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import warnings
from typing import Any

import torch

from kpt.adapters.sim_hal import _discovery
from kpt.adapters.sim_hal._health import device_health
from kpt.adapters.sim_hal._settings import Settings
from kpt.hal import (
    Adapter,
    Capabilities,
    HealthReport,
    HostKernelRun,
    Interconnect,
    Link,
    PrivateUse1TakenError,
    Probe,
    Value,
)

DEVICE_TYPE = "kpt_sim"
CLIENT_PACKAGE = "kpt.adapters.sim"  # importing it registers the device
# torch's name for an unclaimed PrivateUse1 slot
FREE_PRIVATEUSE1_NAME = "privateuseone"

_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64", "int64", "int32", "int8",
                     "uint8", "bool"})  # fmt: skip
_FP8_DTYPES = frozenset({"float8_e4m3fn", "float8_e5m2"})
# Profile summaries name peaks "peak_<dtype>_<matrix|vector>_flops" with short dtype names.
_PEAK_KEY = re.compile(r"peak_(?P<dtype>[a-z0-9]+)_(?:matrix|vector)_flops")
_TORCH_DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32",
                      "fp64": "float64", "tf32": "tensorfloat32", "fp8": "float8_e4m3fn",
                      "int8": "int8"}  # fmt: skip


class SimAdapter(Adapter):
    """Devices of a kpt-sim daemon, through the kpt_sim PyTorch device."""

    name = "sim"
    device_type = DEVICE_TYPE
    uses_privateuse1 = True

    def __init__(self) -> None:
        # What a daemon at KPT_SIM_ENDPOINT answered this adapter (kpt.hal makes a new adapter
        # at each discovery, so a refresh asks again).
        self._discovery = _discovery.DiscoveryCache()

    def probe(self) -> Probe:
        # Never starts a daemon: a running one is asked (short timeout), else profile files.
        # Never registers the device either (that is register_device's job, on first use).
        if importlib.util.find_spec("kpt.sim") is None:
            return Probe.none("kpt-sim is not installed", "the kpt-sim simulator")
        holder = torch._C._get_privateuse1_backend_name()
        if holder not in (FREE_PRIVATEUSE1_NAME, DEVICE_TYPE):
            raise PrivateUse1TakenError(
                f"PrivateUse1 is already {holder!r}; torch allows one PrivateUse1 backend per "
                f"process, so {DEVICE_TYPE!r} cannot be added: run kpt_sim in another process"
            )
        where = _discovery.source()
        try:
            count = len(_discovery.device_infos(self._discovery))
        except Exception as exc:  # unreachable daemon, bad profile or visible-devices setting
            return Probe.none(str(exc), where)
        return Probe.found(count, where) if count else Probe.none("no visible devices", where)

    def register_device(self) -> None:
        """Register ``kpt_sim`` with torch (PrivateUse1): the device is about to be used."""
        importlib.import_module(CLIENT_PACKAGE)

    def _info(self, index: int) -> dict:
        devices = _discovery.device_infos(self._discovery)
        if not 0 <= index < len(devices):
            raise ValueError(
                f"kpt_sim device {index} does not exist: {len(devices)} visible device(s)"
            )
        return devices[index]

    def capabilities(self, index: int) -> Capabilities:
        info = self._info(index)
        free, total = _discovery.memory_info(index, self._discovery)
        count = len(_discovery.device_infos(self._discovery))
        bandwidth = info.get("memory_bandwidth") or info.get("hbm_bandwidth")
        peaks = peak_flops(info)
        # A profile with float8 tensor-core rates runs float8 GEMMs (torch._scaled_mm).
        fp8 = frozenset({"fp8"}) if "float8_e4m3fn" in peaks else frozenset()
        return Capabilities(
            vendor=str(info.get("vendor", "kpt")),
            model=str(info.get("model", info.get("profile", "sim"))),
            index=index,
            memory_total=int(total),
            memory_free=int(free),
            peak_flops=peaks,
            memory_bandwidth=Value(float(bandwidth), "B/s", "nominal") if bandwidth else None,
            dtypes=_DTYPES | (_FP8_DTYPES if fp8 else frozenset()),
            interconnect=_interconnect(info, index, count, Settings.from_environ().endpoint),
            driver_version=f"kpt-sim profile {info.get('profile', '?')}",
            runtime_version="kpt-adapter-sim",
            features=frozenset({"simulated", "events", "streams", "triton-interpreter"}) | fp8,
        )

    def health(self, index: int) -> HealthReport:
        # The daemon's own verdict (injected device_lost, hang, straggler), asked fresh.
        return device_health(index, self._discovery)

    def collectives_backend(self) -> str | None:
        return "kpt"

    def triton_target(self) -> str | None:
        return None

    def memory_info(self, index: int) -> tuple[int, int]:
        self._info(index)
        return _discovery.memory_info(index, self._discovery)

    def synchronize(self, index: int) -> None:
        self.register_device()
        torch.kpt_sim.synchronize(index)

    def on_host_kernel(self, index: int, run: HostKernelRun) -> None:
        """Charge a Triton kernel that ran on the host to the simulated device's clock.

        Queued on the device's current stream after the results were copied back, as one
        memory-bound launch that reads bytes_in and writes bytes_out (the interpreter gives no
        FLOP count; Triton kernels that reach here are mostly elementwise or reductions).
        Never raises: the kernel already ran; a failure to charge is a warning.
        """
        try:
            client = importlib.import_module(f"{CLIENT_PACKAGE}._adapter")
            client.charge_host_kernel(index, run)
        except Exception as exc:
            warnings.warn(
                f"kpt_sim: could not charge Triton kernel {run.kernel!r} to kpt_sim:{index} "
                f"({type(exc).__name__}: {exc}); its simulated time is missing",
                RuntimeWarning,
                stacklevel=2,
            )


def peak_flops(info: dict[str, Any]) -> dict[str, Value]:
    """Peak FLOP/s per torch dtype name from a simulator device summary (best unit wins)."""
    peaks: dict[str, Value] = {}
    for key, amount in info.items():
        match = _PEAK_KEY.fullmatch(key)
        if match is None or not isinstance(amount, int | float) or amount <= 0:
            continue
        dtype = _TORCH_DTYPE_NAMES.get(match["dtype"], match["dtype"])
        if dtype not in peaks or peaks[dtype].amount < amount:
            peaks[dtype] = Value(float(amount), "FLOP/s", "nominal")
    return peaks


def _interconnect(
    info: dict[str, Any], index: int, count: int, endpoint: str | None
) -> Interconnect:
    """``endpoint``: KPT_SIM_ENDPOINT, which names the node (None: an embedded daemon)."""
    bandwidth = info.get("chip_link_bandwidth")
    links = ()
    if isinstance(bandwidth, int | float) and bandwidth > 0 and count > 1:
        links = (Link("sim", Value(float(bandwidth), "B/s", "nominal")),)
    peers = frozenset(i for i in range(count) if i != index) if links else frozenset()
    return Interconnect(node=f"kpt-sim:{endpoint or 'embedded'}",
                        links=links, peers=peers)  # fmt: skip
