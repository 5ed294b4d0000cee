from types import SimpleNamespace

import pytest
import torch

import kpt.adapters.intel
import kpt.hal as hal
from kpt.adapters.intel import IntelAdapter

MAX1550 = SimpleNamespace(name="Intel(R) Data Center GPU Max 1550", total_memory=128 * 2**30,
                          driver_version="1.3.30049", has_fp64=True)  # fmt: skip
ARC = SimpleNamespace(name="Intel(R) Arc(TM) A770 Graphics", total_memory=16 * 2**30,
                      driver_version="1.3.29735", has_fp64=False)  # fmt: skip


class FakeXpu:
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


def test_public_names_are_pinned():
    assert kpt.adapters.intel.__all__ == ["IntelAdapter", "__version__"]


def test_probe_on_this_machine_explains_and_does_not_raise():
    probe = IntelAdapter().probe()
    if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        assert probe.count == 0 and probe.reason


def test_capabilities_for_max_1550_and_arc():
    adapter = IntelAdapter(FakeXpu([MAX1550, ARC]))
    assert adapter.probe().count == 2
    pvc, arc = adapter.capabilities(0), adapter.capabilities(1)
    assert pvc.vendor == "intel" and pvc.driver_version == "1.3.30049"
    assert pvc.peak_flops["bfloat16"].amount == pytest.approx(839e12)
    assert pvc.interconnect.links[0].kind == "xe-link"
    assert "float64" in pvc.dtypes and "float64" not in arc.dtypes
    assert arc.peak_flops == {}  # not in the table: nothing invented
    assert adapter.triton_target() == "xpu"
    assert adapter.collectives_backend() in ("xccl", "ccl", None)


@pytest.mark.skipif(
    not hasattr(torch, "xpu") or torch.xpu._is_compiled(), reason="needs a torch without XPU"
)
def test_a_torch_without_xpu_support_says_so_rather_than_blaming_the_driver():
    probe = IntelAdapter().probe()
    assert probe.count == 0 and "built without XPU support" in probe.reason
    assert "install an XPU build of torch" in probe.reason
    assert "is_available" not in probe.reason


def test_absent_devices_are_explained():
    probe = IntelAdapter(FakeXpu([])).probe()
    assert probe.count == 0 and "torch.xpu.is_available() is False" in probe.reason


def test_discovered_through_the_hal_with_a_reason():
    info = next((i for i in hal.adapters() if i.name == "intel"), None)
    assert info is not None and info.dist == "kpt-adapter-intel"
    assert info.status in ("no-hardware", "loaded") and (info.reason or info.loaded)
