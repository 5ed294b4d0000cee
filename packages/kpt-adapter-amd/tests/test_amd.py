from types import SimpleNamespace

import pytest
import torch

import kpt.adapters.amd
import kpt.hal as hal
from kpt.adapters.amd import AmdAdapter

MI300X = SimpleNamespace(name="AMD Instinct MI300X", gcnArchName="gfx942:sramecc+:xnack-",
                         total_memory=192 * 2**30)  # fmt: skip
MI250 = SimpleNamespace(name="", gcnArchName="gfx90a:sramecc+:xnack-", total_memory=64 * 2**30)
ROCM = SimpleNamespace(cuda=None, hip="6.2.41133")


class FakeHipCuda:
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


class FakeSmi:
    def __init__(self, temperature=60.0, lost=False):
        self.temperature, self.lost = temperature, lost

    def driver_version(self):
        return "6.8.5"

    def memory(self, index):
        return (150 * 2**30, 192 * 2**30)

    def readings(self, index):
        if self.lost:
            raise RuntimeError("AMDSMI_STATUS_NOT_FOUND")
        return {"temperature_c": self.temperature}


def test_public_names_are_pinned():
    assert kpt.adapters.amd.__all__ == ["AmdAdapter", "AmdSmiTelemetry", "__version__"]


def test_probe_on_this_machine_explains_and_does_not_raise():
    probe = AmdAdapter().probe()
    if torch.version.hip is None:
        assert probe.count == 0 and "not a ROCm build" in probe.reason


def test_refuses_cuda_builds():
    probe = AmdAdapter(
        FakeHipCuda([MI300X]), version=SimpleNamespace(cuda="12.8", hip=None)
    ).probe()
    assert probe.count == 0 and "CUDA build" in probe.reason
    assert "install" not in probe.reason  # the nvidia adapter serves it: nothing to install


def test_a_cpu_only_torch_says_what_to_install():
    probe = AmdAdapter(FakeHipCuda([MI300X]), version=SimpleNamespace(cuda=None, hip=None)).probe()
    assert probe.count == 0 and "CPU-only" in probe.reason
    assert "install a ROCm build of torch" in probe.reason


def test_capabilities_recognise_models_by_arch():
    adapter = AmdAdapter(FakeHipCuda([MI300X, MI250]), FakeSmi(), version=ROCM)
    assert adapter.probe().count == 2
    mi300, mi250 = adapter.capabilities(0), adapter.capabilities(1)
    assert mi300.peak_flops["bfloat16"].amount == pytest.approx(1307e12)
    assert "fp8" in mi300.features and mi300.memory_free == 150 * 2**30
    assert mi250.model == "MI250"  # empty name: the gfx90a arch identified it
    assert mi300.runtime_version == "HIP 6.2.41133"
    assert adapter.triton_target() == "hip"
    assert adapter.collectives_backend() in ("nccl", None)


def test_health_thresholds_use_the_hotspot_limit():
    smi = FakeSmi(temperature=95.0)
    adapter = AmdAdapter(FakeHipCuda([MI300X]), smi, version=ROCM)
    assert adapter.health(0).state == "healthy"  # 95 C hotspot is normal on Instinct
    smi.temperature = 105.0
    assert adapter.health(0).state == "degraded"
    smi.lost = True
    assert adapter.health(0).state == "failed"


def test_discovered_through_the_hal_with_a_reason():
    info = next((i for i in hal.adapters() if i.name == "amd"), None)
    assert info is not None and info.dist == "kpt-adapter-amd"
    if torch.version.hip is None:
        assert info.status == "no-hardware" and "ROCm" in info.reason
