from importlib.metadata import EntryPoint

import pytest
import torch

import kpt.hal as hal


def ep(name, value):
    return EntryPoint(name, value, hal.ENTRY_POINT_GROUP)


def by_name(registry):
    return {info.name: info for info in registry.adapters()}


def test_cpu_is_always_a_device(empty_registry):
    devices = empty_registry.devices()
    assert [d.name for d in devices] == ["cpu:0"]
    caps = devices[0].capabilities
    assert 0 < caps.memory_free <= caps.memory_total
    assert "float32" in caps.dtypes
    assert empty_registry.adapter("cpu").collectives_backend() == "gloo"
    assert empty_registry.adapter("cpu").triton_target() is None


def test_installed_entry_point_declares_cpu():
    names = {e.name: e.value for e in hal._discovery.installed_entry_points()}
    assert names.get("cpu") == "kpt.hal._cpu:CpuAdapter"
    assert any(info.name == "cpu" and info.loaded for info in hal.adapters())


def test_import_failure_is_recorded_with_reason(monkeypatch):
    monkeypatch.delenv(hal.ALLOW_LIST_ENV, raising=False)
    registry = hal.Registry([ep("ghost", "kpt_no_such_module_xyz:Adapter")])
    info = by_name(registry)["ghost"]
    assert info.status == "rejected"
    assert "kpt_no_such_module_xyz" in info.reason and "import" in info.reason


def test_object_that_is_not_an_adapter_is_rejected(monkeypatch):
    monkeypatch.delenv(hal.ALLOW_LIST_ENV, raising=False)
    registry = hal.Registry([ep("notone", "collections:OrderedDict")])
    info = by_name(registry)["notone"]
    assert info.status == "rejected" and "not a kpt.hal.Adapter" in info.reason


def test_probe_that_raises_is_rejected_not_skipped(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("boom", probe_error=OSError("driver gone")))
    info = by_name(empty_registry)["boom"]
    assert info.status == "rejected" and "driver gone" in info.reason
    assert [d.adapter for d in empty_registry.devices()] == ["cpu"]


def test_no_hardware_says_what_was_looked_for(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("empty", count=0))
    info = by_name(empty_registry)["empty"]
    assert info.status == "no-hardware"
    assert "no fake cards" in info.reason and "/dev/fake" in info.reason


def test_allow_list_excludes_and_flags_misspelling(monkeypatch, fake_adapter):
    monkeypatch.setenv(hal.ALLOW_LIST_ENV, "good, nvidai")
    registry = hal.Registry([])
    registry.register(fake_adapter("good", device_type="cuda"))
    registry.register(fake_adapter("other", device_type="xpu"))
    infos = by_name(registry)
    assert infos["good"].status == "loaded"
    assert infos["other"].status == "rejected" and "KPT_ADAPTERS" in infos["other"].reason
    assert infos["nvidai"].reason.startswith("nvidai not found: misspelled or not installed")
    assert infos["cpu"].status == "loaded"  # the host stays as the fallback


def test_same_device_type_is_a_conflict(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("a", device_type="cuda"))
    empty_registry.register(fake_adapter("b", device_type="cuda"))
    infos = by_name(empty_registry)
    for name, other in (("a", "b"), ("b", "a")):
        assert infos[name].status == "conflict"
        assert "'cuda'" in infos[name].reason and other in infos[name].reason
    assert {d.adapter for d in empty_registry.devices()} == {"cpu"}


def test_two_privateuse1_adapters_conflict(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("s1", device_type="hpu", privateuse1=True))
    empty_registry.register(fake_adapter("s2", device_type="xla", privateuse1=True))
    infos = by_name(empty_registry)
    assert infos["s1"].status == infos["s2"].status == "conflict"
    assert "PrivateUse1" in infos["s1"].reason


def test_conflict_ignores_adapters_without_hardware(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("nv", device_type="cuda", count=0))
    empty_registry.register(fake_adapter("amd", device_type="cuda", count=1))
    infos = by_name(empty_registry)
    assert infos["nv"].status == "no-hardware" and infos["amd"].status == "loaded"


def test_discovery_is_cached_until_refresh(empty_registry, fake_adapter):
    adapter = fake_adapter("f")
    empty_registry.register(adapter)
    empty_registry.devices()
    empty_registry.adapters()
    empty_registry.select()
    assert adapter.probes == 1
    adapter.count = 3
    empty_registry.refresh()
    assert len([d for d in empty_registry.devices() if d.adapter == "f"]) == 3
    assert adapter.probes == 2


def test_several_kinds_listed_together_and_addressable(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("gpu", device_type="cuda", count=2))
    empty_registry.register(fake_adapter("acc", device_type="xpu", count=1))
    names = [d.name for d in empty_registry.devices()]
    assert sorted(names) == ["cpu:0", "cuda:0", "cuda:1", "xpu:0"]
    assert empty_registry.device("cuda:1").adapter == "gpu"
    assert empty_registry.device(torch.device("xpu")).adapter == "acc"
    with pytest.raises(KeyError, match="cuda:0, cuda:1"):
        empty_registry.device("cuda:7")


def test_register_needs_a_name(empty_registry):
    with pytest.raises(ValueError, match="name"):
        empty_registry.register(object())


def test_unknown_adapter_name_explains(empty_registry):
    with pytest.raises(KeyError, match="kpt doctor"):
        empty_registry.adapter("nope")


def test_adapter_whose_capabilities_fail_is_rejected(empty_registry, fake_adapter):
    adapter = fake_adapter("flaky", count=2)

    def capabilities(index):
        raise RuntimeError(f"bad eeprom on {index}")

    adapter.capabilities = capabilities
    empty_registry.register(adapter)
    info = by_name(empty_registry)["flaky"]
    assert info.status == "rejected" and "bad eeprom on 1" in info.reason


def test_adapter_without_device_type_is_rejected(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("typeless", device_type=""))
    assert "device_type" in by_name(empty_registry)["typeless"].reason


def test_devices_are_hashable_and_stable_across_refresh(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("gpu", count=2))
    before = set(empty_registry.devices())
    empty_registry.refresh()
    assert set(empty_registry.devices()) == before
    assert len({d.capabilities for d in before}) == 3


def test_module_level_register_adapter(fake_adapter, monkeypatch):
    monkeypatch.delenv(hal.ALLOW_LIST_ENV, raising=False)
    hal.refresh()
    hal.register_adapter(fake_adapter("injected", device_type="xpu", count=1))
    try:
        assert hal.device("xpu:0").adapter == "injected"
    finally:
        hal.unregister_adapter("injected")
    assert all(d.adapter != "injected" for d in hal.devices())
    with pytest.raises(KeyError, match="injected"):
        hal.unregister_adapter("injected")


def test_adapter_querying_the_hal_while_probed_is_rejected_not_recursing(
    empty_registry, fake_adapter
):
    adapter = fake_adapter("nosy")

    def probe():
        empty_registry.devices()  # re-entering discovery from inside a probe

    adapter.probe = probe
    empty_registry.register(adapter)
    info = by_name(empty_registry)["nosy"]
    assert info.status == "rejected" and "while discovering" in info.reason
    assert [d.name for d in empty_registry.devices()] == ["cpu:0"]
