"""The sim adapter's probe and capabilities: from profile files, or from a running daemon."""

import pytest

from kpt.adapters.sim import _runtime
from kpt.adapters.sim_hal import SimAdapter, _discovery
from kpt.sim import load_profile


@pytest.fixture
def no_daemon(sim, monkeypatch):
    """This process holds no daemon connection (the next kpt_sim use starts a fresh one)."""
    sim.shutdown()
    monkeypatch.delenv("KPT_SIM_ENDPOINT", raising=False)
    monkeypatch.delenv("KPT_SIM_DEVICES", raising=False)
    monkeypatch.delenv("KPT_SIM_VISIBLE_DEVICES", raising=False)
    return monkeypatch


def test_without_a_daemon_capabilities_come_from_profiles_and_nothing_starts(no_daemon):
    no_daemon.setenv("KPT_SIM_PROFILE", "h100-sxm:1,mi300x:2")
    adapter = SimAdapter()
    assert adapter.probe().count == 3
    mi300x = load_profile("mi300x")
    caps = adapter.capabilities(2)
    assert caps.model == mi300x.model and caps.vendor == mi300x.vendor
    assert caps.memory_total == caps.memory_free == mi300x.hbm_bytes
    assert caps.memory_bandwidth.amount == mi300x.hbm_bandwidth
    assert caps.peak_flops["bfloat16"].amount == mi300x.peak_flops["matrix"]["bf16"]
    assert caps.interconnect.peers == frozenset({0, 1})
    assert adapter.capabilities(0).model == load_profile("h100-sxm").model
    assert adapter.health(1).readings["memory_total"] == mi300x.hbm_bytes
    assert not _runtime.is_started()  # no daemon was started to answer


def test_visible_devices_apply_to_profile_discovery(no_daemon):
    no_daemon.setenv("KPT_SIM_PROFILE", "h100-sxm:1,mi300x:1")
    no_daemon.setenv("KPT_SIM_VISIBLE_DEVICES", "1")
    adapter = SimAdapter()
    assert adapter.probe().count == 1
    assert adapter.capabilities(0).model == load_profile("mi300x").model
    assert not _runtime.is_started()


def test_with_an_endpoint_the_daemon_is_asked(sim, private_daemon, monkeypatch):
    with private_daemon(devices=3) as daemon:
        monkeypatch.setenv("KPT_SIM_DEVICES", "1")  # the embedded count must not be reported
        adapter = SimAdapter()
        probe = adapter.probe()
        assert probe.count == 3 and daemon.endpoint in probe.looked_for
        from kpt.sim import SimClient

        client = SimClient(daemon.endpoint)
        try:
            buffer = client.alloc(2, 1 << 20)  # another client's memory shows in free bytes
            caps = adapter.capabilities(2)
            stats = client.memory_stats(2)
            assert caps.memory_free == stats["free"] <= caps.memory_total - (1 << 20)
            client.free(buffer)
        finally:
            client.close()
        monkeypatch.setenv("KPT_SIM_VISIBLE_DEVICES", "2")
        assert adapter.probe().count == 1
        assert not _runtime.is_started()


def test_an_unreachable_endpoint_is_no_hardware_with_the_reason(sim, tmp_path, monkeypatch):
    sim.shutdown()
    endpoint = f"ipc://{tmp_path}/nobody.sock"
    monkeypatch.setenv("KPT_SIM_ENDPOINT", endpoint)
    probe = SimAdapter().probe()
    assert probe.count == 0
    assert "KPT_SIM_ENDPOINT" in probe.reason and endpoint in probe.reason
    with pytest.raises(_discovery.DaemonUnreachable):
        _discovery.device_infos(_discovery.DiscoveryCache())


def test_each_adapter_keeps_its_own_discovery_answers(sim, tmp_path):
    endpoint = f"ipc://{tmp_path}/nobody.sock"  # no socket file: refused without a wait
    first, second = SimAdapter(), SimAdapter()
    assert isinstance(first._discovery, _discovery.DiscoveryCache)
    assert first._discovery is not second._discovery
    cache = _discovery.DiscoveryCache()
    with pytest.raises(_discovery.DaemonUnreachable) as refused:
        cache.daemon_devices(endpoint)
    with pytest.raises(_discovery.DaemonUnreachable) as again:
        cache.daemon_devices(endpoint)
    assert again.value is refused.value  # remembered for FAILURE_MEMORY_S, not asked again
    with pytest.raises(_discovery.DaemonUnreachable) as elsewhere:
        _discovery.DiscoveryCache().daemon_devices(endpoint)
    assert elsewhere.value is not refused.value  # another adapter asks for itself
