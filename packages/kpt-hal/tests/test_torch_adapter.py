"""The shared torch.<type> base, driven by an injected fake torch module and telemetry."""

from types import SimpleNamespace

import pytest

from kpt.hal import HealthState, TorchDeviceAdapter


class FakeBackend:
    def __init__(self, names, memory=80 * 2**30, available=True, error=None):
        self.names, self.memory, self.available, self.error = names, memory, available, error

    def is_available(self):
        if self.error:
            raise self.error
        return self.available

    def device_count(self):
        return len(self.names) if self.available else 0

    def get_device_properties(self, index):
        return SimpleNamespace(name=self.names[index], total_memory=self.memory)

    def memory_reserved(self, index):
        return 2**30


class FakeTelemetry:
    def __init__(self, readings=None, lost=False):
        self._readings = readings or {"temperature_c": 40.0}
        self.lost = lost

    def driver_version(self):
        return "555.42"

    def memory(self, index):
        return (70 * 2**30, 80 * 2**30)

    def readings(self, index):
        if self.lost:
            raise RuntimeError("GPU is lost")
        return dict(self._readings)


class Vendor(TorchDeviceAdapter):
    name = "vendor"
    device_type = "cuda"
    vendor = "nvidia"
    looked_for = "fake cards"

    def collectives_backend(self):
        return "nccl"

    def triton_target(self):
        return "cuda"


def test_capabilities_combine_torch_and_the_nominal_table():
    adapter = Vendor(FakeBackend(["NVIDIA H100 80GB HBM3"]))
    assert adapter.probe().count == 1
    caps = adapter.capabilities(0)
    assert caps.model == "NVIDIA H100 80GB HBM3" and caps.memory_total == 80 * 2**30
    assert caps.memory_free == 79 * 2**30  # total minus what torch reserved
    assert caps.peak_flops["bfloat16"].amount == pytest.approx(989e12)
    assert caps.memory_bandwidth.source == "nominal"
    assert {"triton", "fp8", "graphs"} <= caps.features
    assert caps.interconnect.links[0].kind == "nvlink"


def test_unknown_model_has_no_invented_figures():
    caps = Vendor(FakeBackend(["Prototype Z"])).capabilities(0)
    assert caps.peak_flops == {} and caps.memory_bandwidth is None
    assert caps.model == "Prototype Z"


def test_probe_explains_absence_and_errors():
    absent = Vendor(FakeBackend([], available=False)).probe()
    assert absent.count == 0 and "is_available() is False" in absent.reason
    assert absent.looked_for == "fake cards"
    broken = Vendor(FakeBackend(["x"], error=RuntimeError("driver mismatch"))).probe()
    assert broken.count == 0 and "driver mismatch" in broken.reason


def test_telemetry_drives_memory_and_health():
    telemetry = FakeTelemetry()
    adapter = Vendor(FakeBackend(["NVIDIA H100"]), telemetry)
    caps = adapter.capabilities(0)
    assert caps.memory_free == 70 * 2**30 and caps.driver_version == "555.42"
    assert adapter.health(0).state == HealthState.HEALTHY
    telemetry._readings = {"temperature_c": 95.0, "ecc_uncorrectable": 2.0}
    report = adapter.health(0)
    assert report.state == HealthState.DEGRADED
    assert "95 C" in report.reason and "2 uncorrectable" in report.reason
    telemetry.lost = True
    assert adapter.health(0).state == HealthState.FAILED


def test_without_telemetry_health_asks_torch():
    adapter = Vendor(FakeBackend(["NVIDIA H100"]))
    assert adapter.health(0).state == HealthState.HEALTHY
    assert adapter.health(5).state == HealthState.FAILED  # no such device
