"""The mixed-group cost model and `kpt-collectives plan`: figures recomputed by hand."""

from __future__ import annotations

import pytest

from kpt.collectives import device_rates, format_plans, plans
from kpt.collectives._cli import main, parse_bytes


def test_flat_plan_is_two_host_copies_and_a_ring_over_the_hosts():
    nbytes = 64 << 20
    flat = next(p for p in plans(["h100-sxm", "mi300x"], nbytes) if p.name == "flat")
    h100, mi300x = device_rates("h100-sxm"), device_rates("mi300x")
    copy = max(h100.host_latency, mi300x.host_latency) + nbytes / min(
        h100.host_bandwidth, mi300x.host_bandwidth
    )
    net = min(h100.network_bandwidth, mi300x.network_bandwidth)
    lat = max(h100.network_latency, mi300x.network_latency)
    ring = 2 * (2 - 1) * (lat + nbytes / 2 / net)
    assert flat.seconds == pytest.approx(2 * copy + ring)


def test_two_vendor_groups_of_two_prefer_the_hierarchical_plan_for_large_tensors():
    ranked = plans(["h100-sxm", "h100-sxm", "mi300x", "mi300x"], 256 << 20)
    assert [p.name for p in ranked] == ["hierarchical", "flat"]
    assert ranked[0].seconds < ranked[1].seconds


def test_one_vendor_group_runs_natively():
    assert plans(["h100-sxm", "h100-sxm"], 1 << 20)[0].name == "native"


def test_unknown_devices_are_named_with_the_known_ones():
    with pytest.raises(ValueError, match="h100-sxm"):
        plans(["h100"], 1024)


def test_plan_command_prints_the_cheapest_first_and_marks_it_as_the_one_that_runs(capsys):
    assert main(["plan", "--devices", "h100-sxm,h100-sxm,mi300x,mi300x", "--bytes", "256MiB"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].startswith("runs   hierarchical")
    assert sum(line.startswith("runs ") for line in lines) == 1  # only the cheapest runs
    assert out == format_plans(["h100-sxm", "h100-sxm", "mi300x", "mi300x"], 256 << 20) + "\n"


def test_sizes_parse_with_units():
    assert parse_bytes("4096") == 4096
    assert parse_bytes("64KiB") == 64 << 10
    assert parse_bytes("2g") == 2 << 30


def test_the_backend_groups_ranks_by_route_and_asks_the_cost_model_with_those_groups():
    from kpt.collectives._hierarchy import (
        hierarchical_applies,
        prefers_hierarchical,
        vendor_groups,
    )

    kinds = ["kpt_sim@a", "cpu", "kpt_sim@a", "cpu"]
    assert vendor_groups(kinds) == [[0, 2], [1, 3]]
    assert hierarchical_applies(kinds)
    assert not hierarchical_applies(["kpt_sim@a", "kpt_sim@a", "cpu"])  # unequal groups
    assert not hierarchical_applies(["kpt_sim@a", "cpu"])  # groups of one
    # h100-sxm and mi300x on one daemon are one route's group, though two vendors
    names = ["h100-sxm", "cpu", "mi300x", "cpu"]
    assert [p.name for p in plans(names, 4096)] == ["flat"]  # by vendor: no equal groups
    by_route = plans(names, 4096, vendor_groups(kinds))
    assert prefers_hierarchical(kinds, names, 4096) == (by_route[0].name == "hierarchical")
    assert by_route[0].name == "hierarchical"
    assert prefers_hierarchical(kinds, ["h100-sxm", "cpu", None, "cpu"], 256 << 20)  # unknown
