"""The host's per-op issue time and the device's back-to-back kernel cost (test-asic, by hand).

test-asic: kernel_launch_us = 1 and a 1 TFLOP/s matrix unit, so OpCost("matmul", F) takes
1 us + F / 1e12 s on an idle device.
"""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from kpt.sim import InvalidRequestError, OpCost, Simulator, load_profile, op_time
from kpt.sim._profiles import profile_from_dict

US = 1e-6
TINY = OpCost("matmul", 1e6, 0)  # 2 us on test-asic
BIG = OpCost("matmul", 1e8, 0)  # 101 us


def asic(**fields) -> object:
    data = tomllib.loads((resources.files("kpt.sim") / "profiles/test-asic.toml").read_text())
    return profile_from_dict("test-asic-host", {**data, **fields})


def test_absent_fields_keep_the_old_model():
    p = load_profile("test-asic")
    assert p.host_issue_s == 0 and p.launch_latency_s == 0


def test_a_stream_of_tiny_kernels_is_host_bound():
    p = asic(host_issue_us=5.0)
    sim = Simulator(p)
    n = 10
    ends = [sim.launch(0, TINY) for _ in range(n)]
    # Each kernel starts when the host has issued it: n issues, then the last kernel.
    assert ends[-1] == pytest.approx(n * 5 * US + op_time(p, *TINY))
    assert sim.synchronize() == pytest.approx(ends[-1])
    assert sim.summary()[0]["busy_s"] == pytest.approx(n * op_time(p, *TINY))


def test_the_summary_says_when_the_host_had_issued_its_work():
    p = asic(host_issue_us=5.0)
    host_bound = Simulator(p)
    for _ in range(10):
        host_bound.launch(0, TINY)
    row = host_bound.summary()[0]
    assert row["host_end_s"] == pytest.approx(10 * 5 * US)
    assert row["end_s"] - row["host_end_s"] == pytest.approx(op_time(p, *TINY))
    device_bound = Simulator(p)
    for _ in range(3):
        device_bound.launch(0, BIG)
    row = device_bound.summary()[0]
    assert row["host_end_s"] == pytest.approx(3 * 5 * US)  # the host was done long before
    assert row["end_s"] > 3 * op_time(p, *BIG)


def test_a_big_kernel_hides_the_issues_behind_it():
    p = asic(host_issue_us=5.0)
    sim = Simulator(p)
    sim.launch(0, BIG)
    for _ in range(4):
        end = sim.launch(0, TINY)
    # The tiny kernels were issued while the big one ran: they follow it back to back.
    assert end == pytest.approx(5 * US + op_time(p, *BIG) + 4 * op_time(p, *TINY))


def test_events_measure_the_host_bound_gaps():
    p = asic(host_issue_us=5.0)
    sim = Simulator(p)
    sim.launch(0, BIG)
    start = sim.record_event(0)
    n = 40
    for _ in range(n):
        sim.launch(0, TINY)
    end = sim.record_event(0)
    # The first tiny kernels queue behind the big one; once that queue drains, each waits for
    # the host, so the last ends one kernel after the host issued it.
    assert sim.event_time(start) == pytest.approx(5 * US + op_time(p, *BIG))
    assert sim.event_time(end) == pytest.approx((n + 1) * 5 * US + op_time(p, *TINY))
    assert sim.event_time(end) - sim.event_time(start) > n * op_time(p, *TINY)


def test_the_host_clock_follows_synchronize_and_reset():
    p = asic(host_issue_us=5.0)
    sim = Simulator(p)
    sim.launch(0, TINY)
    sim.synchronize()
    t = sim.now()
    end = sim.launch(0, TINY)
    assert end == pytest.approx(t + 5 * US + op_time(p, *TINY))
    sim.reset()
    assert sim.launch(0, TINY) == pytest.approx(5 * US + op_time(p, *TINY))


def test_queued_kernels_cost_the_back_to_back_time():
    # 1 us launch of which 0.25 us is back to back: 0.75 us latency on an idle device.
    p = asic(kernel_back_to_back_us=0.25)
    assert p.launch_latency_s == pytest.approx(0.75 * US)
    sim = Simulator(p)
    first = sim.launch(0, TINY)
    assert first == pytest.approx(op_time(p, *TINY))  # an isolated kernel: unchanged
    second = sim.launch(0, TINY)
    assert second - first == pytest.approx(op_time(p, *TINY) - 0.75 * US)


def test_queued_eager_kernels_pay_the_stream_gap_and_graph_nodes_do_not():
    # 1 us launch; a graph's node costs 0.25 us of it back to back, an eager queued kernel 0.5.
    p = asic(kernel_back_to_back_us=0.25, kernel_queued_us=0.5)
    assert p.launch_latency_s == pytest.approx(0.75 * US)
    assert p.stream_gap_s == pytest.approx(0.25 * US)
    assert p.queued_latency_s == pytest.approx(0.5 * US)
    eager, graph = Simulator(p), Simulator(p)
    first = eager.launch(0, TINY)
    assert first == pytest.approx(op_time(p, *TINY))  # an isolated kernel: unchanged
    second = eager.launch(0, TINY)
    assert second - first == pytest.approx(op_time(p, *TINY) - 0.5 * US)
    ends = [graph.launch(0, TINY, graph_node=i > 0) for i in range(3)]
    assert ends[2] - ends[1] == pytest.approx(op_time(p, *TINY) - 0.75 * US)
    assert graph.synchronize() == pytest.approx(ends[-1])
    assert eager.synchronize() == pytest.approx(second)


def test_the_host_issues_copies_in_order_with_kernels():
    p = asic(host_issue_us=5.0)
    sim = Simulator(p, devices=2)
    for _ in range(3):
        sim.launch(0, TINY)
    end = sim.transfer(0, 1, 0)
    assert end >= 15 * US  # issued after the three kernels


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"host_issue_us": -1}, "host_issue_us"),
        ({"host_issue_us": "9"}, "host_issue_us"),
        ({"kernel_back_to_back_us": 2.0}, "kernel_back_to_back_us"),
        ({"kernel_back_to_back_us": float("nan")}, "kernel_back_to_back_us"),
        ({"kernel_queued_us": 2.0}, "kernel_queued_us"),
        ({"kernel_back_to_back_us": 0.5, "kernel_queued_us": 0.25}, "kernel_queued_us"),
    ],
)
def test_bad_host_fields_are_refused_by_name(fields, needle):
    with pytest.raises(InvalidRequestError, match=needle):
        asic(**fields)


def test_h100_fields_come_from_its_measurements():
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "calibration" / "h100_measurements.json"
    if not path.is_file():
        pytest.skip(f"{path} not in this checkout")
    launch = json.loads(path.read_text())["launch"]
    p = load_profile("h100-sxm")
    back_to_back = p.kernel_launch_s - p.launch_latency_s
    assert back_to_back == pytest.approx(launch["device_seconds_per_kernel_graph"], rel=0.01)
    # host_issue_us is host time per launch *inside training steps* (calibration/
    # predict_steps.py, fitted on the MLP's steps), more than an isolated small op costs.
    fit = json.loads((path.parent / "h100_host_fit.json").read_text())
    assert p.host_issue_s == pytest.approx(fit["host_issue_us"] * 1e-6, rel=0.01)
    hosts = sorted(v for k, v in launch.items() if k.startswith("host_seconds_per_op"))
    assert p.host_issue_s > 2 * hosts[len(hosts) // 2]


def test_h100_queued_kernel_figure_comes_from_the_launch_split():
    """kernel_queued_us is kernel_launch_us less what a queued add saved of its held window
    (calibration/h100_launch_split.json, the median of its runs' tiny and 4 MB adds)."""
    import json
    import statistics
    from pathlib import Path

    path = Path(__file__).parents[1] / "calibration" / "h100_launch_split.json"
    if not path.is_file():
        pytest.skip(f"{path} not in this checkout")
    runs = json.loads(path.read_text())["runs"]
    saved = [run[f"device_seconds_held_{size}"] - run[f"device_seconds_per_op_queued_{size}"]
             for run in runs for size in ("tiny", "4mb")]  # fmt: skip
    for name in ("h100-sxm", "h200"):  # h200 is derived from h100-sxm: the same launch
        p = load_profile(name)
        assert p.queued_latency_s == pytest.approx(statistics.median(saved), abs=0.01 * US)
        assert 0 < p.stream_gap_s < p.launch_latency_s


def test_fitted_host_issue_predicts_the_other_models_steps():
    """HOST_STEPS.md's whole-step table: kpt_sim's op traces of the models not fitted, replayed
    on the shipped profile, land within 25% of the H100's walls at the median and 60% at
    worst (foreach and per-tensor optimizers err in opposite directions)."""
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "calibration" / "h100_host_fit.json"
    if not path.is_file():
        pytest.skip(f"{path} not in this checkout")
    from kpt.sim import replay

    fit = json.loads(path.read_text())
    errors = sorted(
        abs(replay(s["trace"], profile="h100-sxm")["predicted_s"] * 1e3 / s["real_ms"] - 1)
        for s in fit["steps"]
        if s["model"] != fit["fitted_on"]
    )
    assert len(errors) >= 5
    assert errors[len(errors) // 2] < 0.25 and errors[-1] < 0.6, errors


def test_a_replayed_graph_pays_the_host_once_and_runs_back_to_back():
    p = asic(host_issue_us=5.0)
    n = 10
    eager, graph = Simulator(p), Simulator(p)
    eager_end = [eager.launch(0, TINY) for _ in range(n)][-1]
    graph_end = [graph.launch(0, TINY, graph_node=i > 0) for i in range(n)][-1]
    assert eager_end == pytest.approx(n * 5 * US + op_time(p, *TINY))
    # One launch issued by the host, then the graph's nodes one after the other on the device.
    assert graph_end == pytest.approx(5 * US + n * op_time(p, *TINY))
    assert graph.synchronize() == pytest.approx(graph_end)


def test_host_work_delays_the_next_issue_but_not_the_work_already_queued():
    p = asic(host_issue_us=5.0)
    sim = Simulator(p)
    big_end = sim.launch(0, BIG)
    sim.host_work(0, 50 * US)  # shorter than BIG: the device never waits for the host
    assert sim.launch(0, TINY) == pytest.approx(big_end + op_time(p, *TINY))
    idle = Simulator(p)
    idle.host_work(0, 50 * US)  # nothing queued: the device waits for the host's work
    assert idle.launch(0, TINY) == pytest.approx(55 * US + op_time(p, *TINY))
