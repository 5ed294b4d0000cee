import pytest
import torch

import kpt.hal as hal
from kpt.hal import HealthReport, HealthState


@pytest.fixture
def registry(empty_registry, fake_adapter):
    empty_registry.register(
        fake_adapter("small", device_type="cuda", count=2, memory=8 * 2**30, flops=50e12)
    )
    empty_registry.register(
        fake_adapter(
            "big",
            device_type="xpu",
            count=1,
            vendor="bigco",
            memory=80 * 2**30,
            flops=900e12,
            features=("triton", "fp8"),
        )
    )
    return empty_registry


def test_best_device_is_the_fastest_accelerator(registry):
    assert registry.select().name == "xpu:0"


def test_needs_filter(registry):
    assert registry.select(adapter="small").adapter == "small"
    assert registry.select(vendor="FAKEVENDOR").adapter == "small"
    assert registry.select(device_type="cpu").name == "cpu:0"
    assert registry.select(min_memory="64GiB").name == "xpu:0"
    assert registry.select(feature="fp8").name == "xpu:0"
    assert registry.select(dtype=torch.float64).name == "cpu:0"  # fakes lack float64


def test_min_memory_accepts_bytes_and_units(registry):
    assert registry.select(min_memory=70 * 2**30).name == "xpu:0"
    assert registry.select(min_memory="85 GB").name == "xpu:0"  # 85e9 < 80 GiB
    with pytest.raises(ValueError, match="'lots'"):
        registry.select(min_memory="lots")


def test_no_device_error_explains_every_refusal(registry):
    with pytest.raises(hal.NoDeviceError) as caught:
        registry.select(min_memory="1TiB", feature="fp8")
    error = caught.value
    assert len(error.refusals) == 4  # cpu, two cuda, one xpu
    text = str(error)
    assert "cuda:1" in text and "lacks feature(s) fp8" in text and "< 1024.0 GiB" in text
    xpu = next(why for name, why in error.refusals.items() if name.startswith("xpu:0"))
    assert len(xpu) == 1 and "memory" in xpu[0]


def test_failed_devices_are_never_chosen(registry):
    best = registry.select()
    registry.record_health(best, HealthReport(HealthState.FAILED, "ECC storm"))
    assert registry.select().name != best.name
    with pytest.raises(hal.NoDeviceError, match="ECC storm"):
        registry.select(adapter="big")


def test_degraded_allowed_unless_healthy_asked(registry):
    xpu = registry.device("xpu:0")
    registry.record_health(xpu, HealthReport(HealthState.DEGRADED, "hot"))
    assert registry.select(adapter="big").name == "xpu:0"
    with pytest.raises(hal.NoDeviceError, match="hot"):
        registry.select(adapter="big", healthy=True)
    # a degraded device ranks below healthy ones
    assert registry.select().name != "xpu:0"


def test_unknown_need_is_a_type_error(registry):
    with pytest.raises(TypeError, match="min_memmory"):
        registry.select(min_memmory=1)


def test_module_level_select_uses_the_default_registry():
    assert hal.select(device_type="cpu").torch_device.type == "cpu"


# ---- ranking by kind: real accelerators, then simulated devices, then the host ------------
@pytest.fixture
def mixed(empty_registry, fake_adapter):
    """A real GPU next to a simulator modelling a faster, larger chip of the same vendor."""
    empty_registry.register(
        fake_adapter("real", count=1, vendor="nvidia", memory=40 * 2**30, flops=300e12)
    )
    empty_registry.register(
        fake_adapter(
            "sim",
            device_type="mtia",  # any torch device type: kpt_sim exists only once registered
            count=1,
            vendor="nvidia",
            memory=80 * 2**30,
            flops=990e12,
            features=("simulated", "triton-interpreter"),
        )
    )
    return empty_registry


def test_devices_know_their_kind(mixed):
    kinds = {d.name: d.kind for d in mixed.devices()}
    assert kinds == {"cpu:0": "host", "cuda:0": "accelerator", "mtia:0": "simulated"}
    assert mixed.device("mtia:0").capabilities.simulated
    assert not mixed.device("cuda:0").capabilities.simulated


def test_real_hardware_beats_a_faster_simulator(mixed):
    assert mixed.select().name == "cuda:0"
    assert mixed.select(vendor="nvidia", dtype="bfloat16").name == "cuda:0"


def test_the_simulator_is_chosen_when_asked_or_when_only_it_qualifies(mixed):
    assert mixed.select(adapter="sim").name == "mtia:0"
    assert mixed.select(simulated=True).name == "mtia:0"
    assert mixed.select(feature="simulated").name == "mtia:0"
    assert mixed.select(min_memory="64GiB").name == "mtia:0"  # the real GPU is too small


def test_simulator_ranks_above_the_host_and_below_hardware(mixed):
    mixed.record_health(mixed.device("cuda:0"), HealthReport(HealthState.FAILED, "fell off"))
    assert mixed.select().name == "mtia:0"
    assert mixed.select(simulated=False).name == "cpu:0"
    mixed.record_health(mixed.device("mtia:0"), HealthReport(HealthState.FAILED, "gone"))
    assert mixed.select().name == "cpu:0"


def test_a_degraded_accelerator_still_beats_a_healthy_simulator(mixed):
    mixed.record_health(mixed.device("cuda:0"), HealthReport(HealthState.DEGRADED, "hot"))
    assert mixed.select().name == "cuda:0"
    assert mixed.select(healthy=True).name == "mtia:0"


def test_simulated_need_explains_refusals_and_checks_its_type(mixed):
    with pytest.raises(hal.NoDeviceError) as caught:
        mixed.select(simulated=False, min_memory="64GiB")
    refusals = {name.split()[0]: why for name, why in caught.value.refusals.items()}
    assert refusals["mtia:0"] == ["simulated, simulated=False asked"]
    assert any("memory" in why for why in refusals["cuda:0"])
    with pytest.raises(TypeError, match="simulated='no'"):
        mixed.select(simulated="no")


def test_default_mesh_never_mixes_hardware_and_simulator(mixed):
    assert {d.name for d in mixed.plan_mesh(1).groups[0]} == {"cuda:0"}
    mixed.record_health(mixed.device("cuda:0"), HealthReport(HealthState.FAILED, "fell off"))
    assert {d.name for d in mixed.plan_mesh(1).groups[0]} == {"mtia:0"}
