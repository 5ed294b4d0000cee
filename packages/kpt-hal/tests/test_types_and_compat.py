import dataclasses

import pytest

import kpt.hal as hal
from kpt.hal import Capabilities, Value, nominal_spec
from kpt.hal.compat import HardwareAdapter


def test_value_source_is_checked():
    assert Value(1.0, "B/s", "measured").source == "measured"
    with pytest.raises(ValueError, match="'guessed'"):
        Value(1.0, "B/s", "guessed")


def test_capabilities_snapshot_cannot_be_edited():
    caps = Capabilities("v", "m", 0, 10, 5, peak_flops={"float32": Value(1.0, "FLOP/s")})
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.model = "other"
    with pytest.raises(TypeError):
        caps.peak_flops["float32"] = Value(2.0, "FLOP/s")
    with pytest.raises(ValueError, match="memory_total=-1"):
        Capabilities("v", "m", 0, -1, 0)


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("AMD Instinct MI300X", "MI300X"),
        ("AMD Instinct MI250X", "MI250X"),
        ("AMD Instinct MI250", "MI250"),
        ("Intel(R) Data Center GPU Max 1550", "Max 1550"),
        ("NVIDIA L4", "L4"),
    ],
)
def test_nominal_table_matches_model_names(name, model):
    spec = nominal_spec(name)
    assert spec is not None and spec.model == model
    assert spec.bandwidth().source == "nominal"
    assert all(v.source == "nominal" and v.amount > 1e12 for v in spec.flops().values())


def test_nominal_table_does_not_guess():
    assert nominal_spec("NVIDIA L40S") is None  # not "L4"
    assert nominal_spec("Some Future Chip") is None
    h100, h200 = nominal_spec("H100"), nominal_spec("H200")
    assert h200.bandwidth().amount > h100.bandwidth().amount


def test_compat_hardware_adapter_uses_the_hal():
    legacy = HardwareAdapter()
    assert legacy.get_hal() is hal
    assert legacy.device_count() == len(hal.devices())
    assert legacy.get_device(device_type="cpu").type == "cpu"
    assert legacy.is_available() == any(d.torch_device.type != "cpu" for d in hal.devices())
