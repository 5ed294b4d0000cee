import math

import pytest

from kpt.sim import InvalidRequestError, Simulator, load_profile

P = load_profile("test-asic")
BETA = P.chip_link_count * P.chip_link_bandwidth  # a switch port: all chip links
ALPHA = P.chip_link_latency_s  # up to the switch and down again


def _ring_closed_form(n, nbytes):
    chunk = nbytes / n
    reduce_extra = max(0.0, 3 * chunk / P.hbm_bandwidth - chunk / BETA)
    return 2 * (n - 1) * (ALPHA + chunk / BETA) + (n - 1) * reduce_extra


@pytest.mark.parametrize("n", [2, 5, 8])
def test_ring_all_reduce_matches_its_closed_form(n):
    sim = Simulator("test-asic", devices=n)
    result = sim.collective("all_reduce", 4_000_000, algorithm="ring")
    assert result.duration == pytest.approx(_ring_closed_form(n, 4_000_000), rel=1e-9)
    assert result.steps == 2 * (n - 1) and result.transfers == 2 * (n - 1) * n
    ends = [sim.event_time(sim.record_event(d, 0)) for d in range(n)]
    assert ends == pytest.approx([result.end] * n)


def test_tree_all_reduce_matches_its_closed_form():
    sim = Simulator("test-asic", devices=8)
    result = sim.collective("all_reduce", 1_000_000, algorithm="tree")
    levels = math.ceil(math.log2(8))
    reduce_extra = max(0.0, 3e6 / P.hbm_bandwidth - 1e6 / BETA)
    expected = 2 * levels * (ALPHA + 1e6 / BETA) + levels * reduce_extra
    assert result.duration == pytest.approx(expected, rel=1e-9)


def test_the_cheaper_algorithm_is_chosen_unless_forced():
    sim = Simulator("h100-sxm", devices=16, trace=False)
    small = sim.collective("all_reduce", 1024)
    big = sim.collective("all_reduce", 1 << 28)
    assert small.algorithm == "tree" and big.algorithm == "ring"
    assert small.estimates["tree"] < small.estimates["ring"]
    forced = sim.collective("all_reduce", 1024, algorithm="ring")
    assert forced.algorithm == "ring"


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [("all_gather", "ring"), ("reduce_scatter", "ring"), ("all_to_all", "pairwise"),
     ("broadcast", "tree"), ("broadcast", "ring")],
)  # fmt: skip
def test_each_collective_matches_its_closed_form(kind, algorithm):
    sim = Simulator("test-asic", devices=8)  # trees are exact for powers of two
    result = sim.collective(kind, 8_000_000, algorithm=algorithm)
    assert result.duration == pytest.approx(result.predicted, rel=1e-9)
    assert result.duration > 0


def test_send_recv_is_one_transfer():
    sim = Simulator("test-asic", devices=4)
    result = sim.collective("send_recv", 1_000_000, src=1, dst=3)
    assert result.duration == pytest.approx(ALPHA + 1e6 / BETA)
    assert result.devices == [1, 3]


def test_hierarchical_all_reduce_across_nodes():
    sim = Simulator("test-asic", devices=8, nodes=2)
    result = sim.collective("all_reduce", 8_000_000)
    assert result.algorithm == "hierarchical"  # the flat ring crosses the slow network 8 times
    assert result.duration == pytest.approx(result.predicted, rel=1e-9)
    assert result.estimates["hierarchical"] < result.estimates["ring"]


def test_collectives_contend_with_other_traffic_on_links():
    sim = Simulator("test-asic", devices=2)
    a, b = sim.alloc(0, 8_000_000), sim.alloc(1, 8_000_000)
    alone = sim.copy(a, b, 8_000_000, stream=7)  # forecast: d0's uplink to itself
    copied = sim.record_event(0, 7)
    result = sim.collective("all_reduce", 1_000_000, algorithm="ring")
    quiet = Simulator("test-asic", devices=2).collective("all_reduce", 1_000_000, algorithm="ring")
    # They share d0's uplink: each slows the other.
    assert result.end > quiet.end
    assert sim.event_time(copied) > alone


def test_collective_waits_for_each_ranks_stream():
    sim = Simulator("test-asic", devices=2)
    from kpt.sim import OpCost

    busy_until = sim.launch(1, OpCost("matmul", 1e8, 0))
    result = sim.collective("all_reduce", 1000, algorithm="ring")
    assert result.end > busy_until


def test_bad_collective_requests():
    sim = Simulator("test-asic", devices=4)
    with pytest.raises(InvalidRequestError, match="collective 'allreduce' unknown"):
        sim.collective("allreduce", 10)
    with pytest.raises(InvalidRequestError, match="algorithm 'tree' does not exist for all_gather"):
        sim.collective("all_gather", 10, algorithm="tree")
    with pytest.raises(InvalidRequestError, match="repeat a device"):
        sim.collective("all_reduce", 10, devices=[0, 0])
    with pytest.raises(InvalidRequestError, match="needs the devices to span several nodes"):
        sim.collective("all_reduce", 10, algorithm="hierarchical")


def test_1024_chip_ring_all_reduce_is_fast_and_within_2_percent_of_closed_form():
    import time

    sim = Simulator("h100-sxm", devices=1024, trace=False)
    start = time.perf_counter()
    result = sim.collective("all_reduce", 1 << 30, algorithm="ring")
    assert time.perf_counter() - start < 5.0
    alpha, beta = sim.topology.path_cost(0, 1)
    hbm = sim.devices[0].profile.hbm_bandwidth
    from kpt.sim import ring_all_reduce_time

    assert result.duration == pytest.approx(
        ring_all_reduce_time(1024, 1 << 30, alpha, beta, hbm), rel=0.02
    )
