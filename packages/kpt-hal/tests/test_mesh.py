import pytest

import kpt.hal as hal


def test_two_full_nodes_make_a_two_by_eight_mesh(empty_registry, fake_adapter):
    nodes = ["a"] * 8 + ["b"] * 8
    empty_registry.register(fake_adapter("gpu", count=16, nodes=nodes, link_gbps=450))
    plan = empty_registry.plan_mesh(16)
    assert plan.shape == (2, 8) and plan.dim_names == ("node", "local")
    for group in plan.groups:
        assert len({d.capabilities.interconnect.node for d in group}) == 1
    assert plan.device_for_rank(15) in plan.groups[1]
    assert plan.link_bandwidth == (450e9, 450e9)


def test_ranks_fill_the_fastest_island_first(empty_registry, fake_adapter):
    # Devices 0-3 reach each other over a fast link; 4-7 form a second island.
    peers = [set(range(4)) - {i} for i in range(4)] + [set(range(4, 8)) - {i} for i in range(4, 8)]
    empty_registry.register(fake_adapter("gpu", count=8, peers=peers, link_gbps=300))
    plan = empty_registry.plan_mesh(4)
    indices = sorted(d.index for d in plan.devices)
    assert indices in ([0, 1, 2, 3], [4, 5, 6, 7])
    assert not plan.notes


def test_prefers_nodes_that_hold_a_whole_group(empty_registry, fake_adapter):
    nodes = ["a"] * 2 + ["b"] * 4
    empty_registry.register(fake_adapter("gpu", count=6, nodes=nodes))
    plan = empty_registry.plan_mesh(4)
    assert plan.shape == (1, 4)
    assert {d.capabilities.interconnect.node for d in plan.devices} == {"b"}


def test_uneven_nodes_fall_back_to_a_flat_mesh(empty_registry, fake_adapter):
    nodes = ["a"] * 3 + ["b"] * 2
    empty_registry.register(fake_adapter("gpu", count=5, nodes=nodes))
    plan = empty_registry.plan_mesh(5)
    assert plan.shape == (5,) and plan.world_size == 5
    assert "flat" in plan.notes[-1]


def test_failed_devices_and_cpu_are_left_out(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("gpu", count=2))
    bad = empty_registry.device("cuda:1")
    empty_registry.record_health(bad, hal.HealthReport("failed", "dead"))
    plan = empty_registry.plan_mesh(1)
    assert [d.name for d in plan.devices] == ["cuda:0"]
    with pytest.raises(ValueError, match="only 1 given"):
        empty_registry.plan_mesh(2)


def test_bad_world_size(empty_registry):
    with pytest.raises(ValueError, match="world_size=0"):
        empty_registry.plan_mesh(0)
    assert hal.plan_mesh(1).devices[0].adapter in {i.name for i in hal.adapters()}


def test_mixed_adapters_are_noted(empty_registry, fake_adapter):
    empty_registry.register(fake_adapter("gpu", device_type="cuda", count=2))
    empty_registry.register(fake_adapter("acc", device_type="xpu", count=2))
    plan = empty_registry.plan_mesh(4)
    assert plan.shape == (2, 2)
    assert any("several adapters" in note for note in plan.notes)
    with pytest.raises(ValueError, match="mixes device types"):
        plan.init_device_mesh()
