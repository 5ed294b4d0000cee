"""torch.kpt_sim answers what torch.cuda answers: properties, capability, memory, utilization."""

import pytest
import torch

from kpt.sim import load_profile


def test_device_properties_are_an_object_like_cudas(sim):
    props = torch.kpt_sim.get_device_properties(0)
    h100 = load_profile("h100-sxm")
    assert props.name == h100.model and props.total_memory == h100.hbm_bytes
    assert props.multi_processor_count == h100.summary()["compute_units"]
    assert (props.major, props.minor) == torch.kpt_sim.get_device_capability(0) == (9, 0)
    assert props.profile == "h100-sxm" and props.hbm_bandwidth == h100.hbm_bandwidth
    with pytest.raises(AttributeError, match="no 'nonsense'"):
        props.nonsense  # noqa: B018


def test_memory_stats_summary_and_snapshot(sim):
    torch.kpt_sim.synchronize()
    before = torch.kpt_sim.memory_stats()
    held = torch.empty(3 << 20, dtype=torch.uint8, device="kpt_sim")
    stats = torch.kpt_sim.memory_stats()
    grew = stats["allocated_bytes.all.current"] - before["allocated_bytes.all.current"]
    assert grew >= held.numel()
    assert stats["allocated_bytes.all.current"] == torch.kpt_sim.memory_allocated()
    assert stats["reserved_bytes.all.current"] == torch.kpt_sim.memory_reserved()
    assert stats["allocation.all.allocated"] > before["allocation.all.allocated"]
    _, total = torch.kpt_sim.mem_get_info()
    assert stats["device_total_bytes"] == total
    summary = torch.kpt_sim.memory_summary()
    assert "kpt_sim:0" in summary and "Allocated memory" in summary and "MiB" in summary
    snapshot = torch.kpt_sim.memory_snapshot()
    assert sum(s["allocated_size"] for s in snapshot) == torch.kpt_sim.memory_allocated()
    assert all(s["device"] == 0 for s in snapshot)


def test_utilization_is_the_busy_share_of_simulated_time(sim):
    torch.kpt_sim.utilization()  # start a window
    x = torch.randn(512, 512, device="kpt_sim")
    for _ in range(20):
        x = x @ x / 512
    torch.kpt_sim.synchronize()
    busy = torch.kpt_sim.utilization()
    assert 0 < busy <= 100
    assert isinstance(busy, int)
