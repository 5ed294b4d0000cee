from types import SimpleNamespace

import pytest
import torch

import kpt.adapters.nvidia
import kpt.hal as hal
from kpt.adapters.nvidia import NvidiaAdapter, NvmlTelemetry

H100 = SimpleNamespace(
    name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30, major=9, minor=0,
    pci_domain_id=0, pci_bus_id=0x1B, pci_device_id=0,
)  # fmt: skip
A100 = SimpleNamespace(name="NVIDIA A100-SXM4-40GB", total_memory=40 * 2**30, major=8, minor=0)


class FakeCuda:
    def __init__(self, props):
        self.props = props

    def is_available(self):
        return bool(self.props)

    def device_count(self):
        return len(self.props)

    def get_device_properties(self, index):
        return self.props[index]

    def memory_reserved(self, index):
        return 0


class FakeNvmlError(Exception):
    pass


class FakePynvml:
    """The handful of pynvml calls NvmlTelemetry makes."""

    NVMLError = FakeNvmlError
    NVML_TEMPERATURE_GPU = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_P2P_CAPS_INDEX_NVLINK = 6
    NVML_P2P_STATUS_OK = 0

    def __init__(self):
        self.temperature, self.ecc, self.lost, self.by_bus = 45, 0, False, []
        self.nvlinked = set()

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        self.by_bus.append(bus_id)
        return bus_id

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlSystemGetDriverVersion(self):
        return b"560.35.03"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(free=60 * 2**30, total=80 * 2**30)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        if self.lost:
            raise FakeNvmlError("GPU is lost")
        return self.temperature

    def nvmlDeviceGetPowerUsage(self, handle):
        return 350_000

    def nvmlDeviceGetTotalEccErrors(self, handle, kind, counter):
        return self.ecc

    def nvmlDeviceGetP2PStatus(self, a, b, caps):
        assert caps == self.NVML_P2P_CAPS_INDEX_NVLINK
        return 0 if {a, b} <= self.nvlinked else 1


CUDA_BUILD = SimpleNamespace(cuda="12.8", hip=None)


def test_public_names_are_pinned():
    assert kpt.adapters.nvidia.__all__ == ["NvidiaAdapter", "NvmlTelemetry", "__version__"]


def test_probe_on_this_machine_explains_and_does_not_raise():
    probe = NvidiaAdapter().probe()
    if torch.version.cuda is None:
        assert probe.count == 0 and "CPU-only" in probe.reason
        assert "install a CUDA build of torch" in probe.reason
    assert probe.looked_for


def test_refuses_rocm_builds():
    probe = NvidiaAdapter(FakeCuda([H100]), version=SimpleNamespace(cuda=None, hip="6.2")).probe()
    assert probe.count == 0 and "ROCm" in probe.reason and "amd" in probe.reason


def test_capabilities_from_torch_and_table_without_nvml(monkeypatch):
    adapter = NvidiaAdapter(FakeCuda([H100, A100]), version=CUDA_BUILD)
    adapter._telemetry_tried = True  # as if nvidia-ml-py were not installed
    assert adapter.probe().count == 2
    h100, a100 = adapter.capabilities(0), adapter.capabilities(1)
    assert h100.vendor == "nvidia" and h100.runtime_version == "CUDA 12.8"
    assert h100.peak_flops["float8"].amount == pytest.approx(1979e12)
    assert "fp8" in h100.features and "fp8" not in a100.features
    assert a100.peak_flops["bfloat16"].amount == pytest.approx(312e12)
    assert adapter.collectives_backend() in ("nccl", None)
    assert adapter.triton_target() == "cuda"


def test_nvml_telemetry_gives_measured_memory_and_health():
    nvml = FakePynvml()
    telemetry = NvmlTelemetry(nvml, bus_ids=["00000000:1b:00.0"])
    adapter = NvidiaAdapter(FakeCuda([H100]), telemetry, version=CUDA_BUILD)
    caps = adapter.capabilities(0)
    assert caps.memory_free == 60 * 2**30 and caps.driver_version == "560.35.03"
    assert set(nvml.by_bus) == {"00000000:1b:00.0"}  # found by PCI bus id, not by index
    report = adapter.health(0)
    assert report.state == "healthy" and report.readings["power_w"] == 350.0
    nvml.temperature, nvml.ecc = 93, 4
    report = adapter.health(0)
    assert (
        report.state == "degraded"
        and "93 C" in report.reason
        and "4 uncorrectable" in report.reason
    )
    nvml.lost = True
    assert adapter.health(0).state == "failed"


def test_discovered_through_the_hal_with_a_reason():
    info = next((i for i in hal.adapters() if i.name == "nvidia"), None)
    assert info is not None, "entry point kpt.adapters:nvidia not installed"
    assert info.dist == "kpt-adapter-nvidia"
    if torch.version.cuda is None:
        assert info.status == "no-hardware" and "CPU-only" in info.reason


def test_nvlink_peers_from_nvml_feed_the_mesh_planner():
    nvml = FakePynvml()
    nvml.nvlinked = {0, 1}  # GPUs 0 and 1 share NVLink; GPU 2 hangs off PCIe only
    adapter = NvidiaAdapter(FakeCuda([H100, H100, H100]), NvmlTelemetry(nvml), version=CUDA_BUILD)
    caps = [adapter.capabilities(i) for i in range(3)]
    assert caps[0].interconnect.peers == {1} and caps[1].interconnect.peers == {0}
    assert caps[0].interconnect.links[0].kind == "nvlink"
    assert caps[2].interconnect.peers == frozenset() and caps[2].interconnect.links == ()
    devices = [hal.Device("nvidia", i, torch.device("cuda", i), c) for i, c in enumerate(caps)]
    plan = hal.Registry(entry_points=[]).plan_mesh(2, devices)
    assert sorted(d.index for d in plan.devices) == [0, 1]
