"""The Adapter contract a vendor implements, and a base that does the torch.<type> parts."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Protocol

import torch

from kpt.hal._nominal import nominal_spec
from kpt.hal._types import (
    Capabilities,
    HealthReport,
    HealthState,
    HostKernelRun,
    Interconnect,
    Link,
    Probe,
)

# Names torch uses for dtypes, as kpt spells them in Capabilities.dtypes and select(dtype=).
COMMON_DTYPES = frozenset({"float32", "float16", "bfloat16", "int8", "int32", "int64", "bool"})


class Adapter(abc.ABC):
    """What a vendor implements to make its accelerator a kpt device.

    probe() must be cheap and side-effect free: no device memory, no servers, no contexts.
    """

    name: ClassVar[str]  # "cuda", "sim", "cpu", ...
    device_type: ClassVar[str]  # torch device type: "cuda", "kpt_sim", "cpu", "xpu"
    uses_privateuse1: ClassVar[bool] = False

    @abc.abstractmethod
    def probe(self) -> Probe:
        """How many devices are present, or why none are."""

    @abc.abstractmethod
    def capabilities(self, index: int) -> Capabilities:
        """What device `index` is and can do."""

    @abc.abstractmethod
    def health(self, index: int) -> HealthReport:
        """Whether device `index` is healthy, degraded or failed, and why."""

    @abc.abstractmethod
    def collectives_backend(self) -> str | None:
        """torch.distributed backend name: "nccl", "gloo", "xccl", "kpt", or None."""

    @abc.abstractmethod
    def triton_target(self) -> str | None:
        """Triton target: "cuda", "hip", "xpu", or None for the interpreter."""

    def register_device(self) -> None:
        """Make torch know ``device_type`` (a PrivateUse1 backend takes the slot here).

        Called the first time a discovered device's ``torch_device`` is read, never during
        discovery: listing and selecting devices must leave torch as it was. The default
        does nothing (built-in device types need no registration).
        """
        return None

    def memory_info(self, index: int) -> tuple[int, int]:
        """(free, total) bytes right now, through torch.<device_type>.mem_get_info."""
        return self._torch_module().mem_get_info(index)

    def synchronize(self, index: int) -> None:
        """Wait for all work queued on device `index`."""
        self._torch_module().synchronize(index)

    def on_host_kernel(self, index: int, run: HostKernelRun) -> None:
        """Told after run_triton ran a kernel for device `index` under the host interpreter.

        The default does nothing. A simulator overrides it to charge its chip's clock for
        the kernel; a real adapter might count host fallbacks. Must not raise: the kernel has
        already run and its results are on the device.
        """
        return None

    def _torch_module(self) -> Any:
        module = getattr(torch, self.device_type, None)
        if module is None:
            raise RuntimeError(
                f"adapter {self.name!r}: torch has no module torch.{self.device_type}; "
                "override memory_info() and synchronize() or register the device first"
            )
        return module


class Telemetry(Protocol):
    """A vendor management library (NVML, amdsmi, ...) seen through three calls.

    readings() raising means the device is lost: the adapter reports it failed.
    """

    def driver_version(self) -> str: ...

    def memory(self, index: int) -> tuple[int, int] | None: ...  # (free, total) bytes

    def readings(self, index: int) -> dict[str, float]: ...  # temperature_c, power_w, ...


class TorchDeviceAdapter(Adapter):
    """Base for adapters over a built-in torch device module (torch.cuda, torch.xpu).

    A vendor subclass sets name/device_type/vendor and overrides the few `_hooks` that differ.
    The torch module and the telemetry source are injectable so capability and health logic
    can be tested without the hardware.
    """

    vendor: ClassVar[str] = ""
    looked_for: ClassVar[str] = ""
    max_temperature_c: ClassVar[float] = 90.0  # at or above: degraded (throttling ahead)

    def __init__(self, backend: Any = None, telemetry: Telemetry | None = None) -> None:
        self._backend = backend
        self.telemetry = telemetry

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = getattr(torch, self.device_type)
        return self._backend

    # ---- hooks a vendor overrides -------------------------------------------------------
    def _refusal(self) -> str | None:
        """Why this torch build is not ours (e.g. a ROCm build for the NVIDIA adapter)."""
        return None

    def _model_key(self, props: Any) -> str:
        """The text matched against the nominal table (name, plus arch where names are vague)."""
        return str(getattr(props, "name", ""))

    def _driver_version(self) -> str:
        if self.telemetry is not None:
            try:
                return self.telemetry.driver_version()
            except Exception:
                return ""
        return ""

    def _runtime_version(self) -> str:
        return ""

    def _memory_free(self, index: int, total: int) -> int:
        """Free bytes without creating a device context: telemetry, else total minus reserved."""
        if self.telemetry is not None:
            try:
                measured = self.telemetry.memory(index)
            except Exception:
                measured = None
            if measured is not None:
                return int(measured[0])
        try:
            return max(0, total - int(self.backend.memory_reserved(index)))
        except Exception:
            return total

    def _extra_features(self, index: int, props: Any) -> set[str]:
        return set()

    def _unsupported_dtypes(self, index: int, props: Any) -> set[str]:
        """Dtypes this board cannot compute (e.g. {"float64"} on a chip without it)."""
        return set()

    def _interconnect(self, index: int, count: int, link: Link | None) -> Interconnect:
        return Interconnect(links=(link,) if link else ())

    # ---- the contract -------------------------------------------------------------------
    def probe(self) -> Probe:
        refusal = self._refusal()
        if refusal:
            return Probe.none(refusal, self.looked_for)
        try:
            available = bool(self.backend.is_available())
            count = int(self.backend.device_count()) if available else 0
        except Exception as exc:  # a broken driver is a reason, not a crash
            return Probe.none(f"torch.{self.device_type} raised {exc!r}", self.looked_for)
        if count == 0:
            # Names whose device was looked for; a missing runtime library is _refusal()'s to say.
            return Probe.none(
                f"no {self.vendor or self.name} device visible: torch.{self.device_type}"
                f".is_available() is {available} (no driver, no device, or hidden by "
                "*_VISIBLE_DEVICES)",
                self.looked_for,
            )
        return Probe.found(count, self.looked_for)

    def capabilities(self, index: int) -> Capabilities:
        props = self.backend.get_device_properties(index)
        total = int(getattr(props, "total_memory", 0))
        spec = nominal_spec(self._model_key(props))
        dtypes = set(COMMON_DTYPES) | {"float64"}
        features = {"triton"} if self.triton_target() else set()
        if spec is not None:
            dtypes |= spec.dtypes
            features |= spec.features
        features |= self._extra_features(index, props)
        dtypes -= self._unsupported_dtypes(index, props)
        count = int(self.backend.device_count())
        return Capabilities(
            vendor=self.vendor,
            model=str(getattr(props, "name", "")) or (spec.model if spec else "unknown"),
            index=index,
            memory_total=total,
            memory_free=self._memory_free(index, total),
            peak_flops=spec.flops() if spec else {},
            memory_bandwidth=spec.bandwidth() if spec else None,
            dtypes=frozenset(dtypes),
            interconnect=self._interconnect(index, count, spec.link() if spec else None),
            driver_version=self._driver_version(),
            runtime_version=self._runtime_version(),
            features=frozenset(features),
        )

    def health(self, index: int) -> HealthReport:
        if self.telemetry is None:
            try:
                self.backend.get_device_properties(index)
            except Exception as exc:
                return HealthReport(HealthState.FAILED, f"device does not answer: {exc!r}")
            return HealthReport.healthy("answers queries; no telemetry library installed")
        try:
            readings = self.telemetry.readings(index)
        except Exception as exc:
            return HealthReport(HealthState.FAILED, f"telemetry lost the device: {exc!r}")
        return self._judge(readings)

    def _judge(self, readings: dict[str, float]) -> HealthReport:
        problems = []
        temperature = readings.get("temperature_c")
        if temperature is not None and temperature >= self.max_temperature_c:
            problems.append(f"temperature {temperature:.0f} C >= {self.max_temperature_c:.0f} C")
        errors = readings.get("ecc_uncorrectable", 0)
        if errors:
            problems.append(f"{errors:.0f} uncorrectable ECC error(s) since boot")
        if problems:
            return HealthReport(HealthState.DEGRADED, "; ".join(problems), readings)
        return HealthReport(HealthState.HEALTHY, "", readings)
