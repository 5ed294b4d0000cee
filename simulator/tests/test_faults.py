import json

import pytest

from kpt.sim import (
    DeviceHangError,
    DeviceLostError,
    Fault,
    InvalidRequestError,
    LinkDownError,
    MemoryFaultError,
    OpCost,
    Simulator,
    load_faults,
    load_profile,
)

P = load_profile("test-asic")
OP = OpCost("matmul", 1e6, 0)
OP_TIME = P.kernel_launch_s + 1e6 / 1e12  # 2 us


def test_device_lost_on_demand_fails_later_work_and_allocations():
    sim = Simulator("test-asic", devices=2)
    sim.launch(0, OP)
    sim.synchronize()
    sim.inject_fault("device_lost", device=0)
    sim.launch(0, OP)
    with pytest.raises(DeviceLostError, match="device 0 was lost"):
        sim.synchronize()
    with pytest.raises(DeviceLostError):
        sim.alloc(0, 10)
    sim.launch(1, OP)  # the other device is fine
    sim.synchronize(1)


def test_scheduled_device_lost_hits_work_running_at_that_time():
    sim = Simulator("test-asic", faults=[{"kind": "device_lost", "device": 0, "at_us": 5}])
    sim.launch(0, OP)  # 0-2 us
    sim.synchronize()
    sim.launch(0, OP)  # 2-4 us
    sim.synchronize()
    sim.launch(0, OP)  # 4-6 us: crosses 5 us
    with pytest.raises(DeviceLostError):
        sim.synchronize()


def test_hang_surfaces_after_the_hang_timeout():
    sim = Simulator("test-asic", hang_timeout=2.0)
    first = sim.launch(0, OP)
    sim.inject_fault("hang", device=0)
    assert sim.launch(0, OP) == float("inf")
    with pytest.raises(DeviceHangError, match=r"hang timeout of 2\.0 s"):
        sim.synchronize()
    assert sim.now() == pytest.approx(2.0)
    event = sim.record_event(0)
    assert sim.event_time(event) == float("inf") and first == pytest.approx(OP_TIME)


@pytest.mark.parametrize(
    ("kind", "factor", "slowdown"), [("straggler", 3.0, 3.0), ("thermal_throttle", 0.5, 2.0)]
)
def test_slow_devices(kind, factor, slowdown):
    sim = Simulator("test-asic", devices=2)
    sim.inject_fault(kind, device=1, factor=factor, duration=1.0)
    assert sim.launch(0, OP) == pytest.approx(OP_TIME)
    assert sim.launch(1, OP) == pytest.approx(slowdown * OP_TIME)


def test_memory_error_on_a_buffer():
    sim = Simulator("test-asic")
    good, bad = sim.alloc(0, 1000), sim.alloc(0, 1000)
    sim.inject_fault("memory_error", device=0, buffer=bad)
    sim.read(good, 0, 1000)
    with pytest.raises(MemoryFaultError, match=f"buffer {bad}"):
        sim.read(bad, 0, 1000)
    sim.launch(0, OP, buffers=(bad,))
    with pytest.raises(MemoryFaultError):
        sim.synchronize()


def test_link_down_and_degraded():
    sim = Simulator("test-asic", devices=2)
    a, b = sim.alloc(0, 1_000_000), sim.alloc(1, 1_000_000)
    healthy = sim.copy(a, b, 1_000_000)
    sim.synchronize()
    sim.reset()
    sim.inject_fault("link_degraded", link=(0, 1), factor=0.5)
    a, b = sim.alloc(0, 1_000_000), sim.alloc(1, 1_000_000)
    alpha, _ = sim.topology.path_cost(0, 1)
    assert sim.copy(a, b, 1_000_000) == pytest.approx(alpha + 2 * (healthy - alpha))
    sim.inject_fault("link_down", link=(0, 1))
    sim.copy(a, b, 1000)
    with pytest.raises(LinkDownError, match="is down"):
        sim.synchronize()
    sim.collective("all_reduce", 1000)
    with pytest.raises(LinkDownError):
        sim.synchronize()


def test_link_down_for_a_while_recovers():
    sim = Simulator("test-asic", devices=2)
    sim.inject_fault(Fault("link_down", link=(0, 1), at=0.0, duration=1e-3))
    sim.transfer(0, 1, 1000)
    with pytest.raises(LinkDownError):
        sim.synchronize()
    sim.launch(0, OpCost("matmul", 2e9, 0))  # 2 ms of work: later transfers start after 1 ms
    sim.transfer(0, 1, 1000)
    sim.synchronize()


def test_fault_after_n_ops():
    sim = Simulator("test-asic", faults=[{"kind": "straggler", "device": 0, "after_ops": 2,
                                          "factor": 4.0}])  # fmt: skip
    ends = [sim.launch(0, OP) for _ in range(3)]
    assert ends[1] == pytest.approx(2 * OP_TIME)
    assert ends[2] - ends[1] == pytest.approx(4 * OP_TIME)


def _traced_run(seed):
    sim = Simulator("test-asic", devices=2, seed=seed)
    buffers = [sim.alloc(0, 1000) for _ in range(16)]
    sim.inject_fault("memory_error", device=0)  # picks a buffer with the seeded generator
    hit = [b for b in buffers if sim.buffer(b).fault_at < float("inf")]
    for i in range(20):
        sim.launch(i % 2, OpCost("elementwise", 1e5 * (i + 1), 1e4), stream=i % 3)
    sim.collective("all_reduce", 1_000_000)
    return hit, sim.trace.to_chrome()


def test_same_seed_same_faults_and_trace():
    assert _traced_run(7) == _traced_run(7)
    hits = {tuple(_traced_run(seed)[0]) for seed in range(8)}
    assert len(hits) > 1  # the seed does choose


def test_fault_files(tmp_path):
    toml = tmp_path / "faults.toml"
    toml.write_text('[[fault]]\nkind = "hang"\ndevice = 1\nat_us = 3.5\n')
    (fault,) = load_faults(toml)
    assert fault == Fault("hang", device=1, at=3.5e-6)
    js = tmp_path / "faults.json"
    js.write_text(json.dumps({"faults": [{"kind": "link_down", "link": [0, 1]}]}))
    assert load_faults(js)[0].link == (0, 1)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "meltdown", "device": 0}, "fault kind 'meltdown' unknown"),
        ({"kind": "hang"}, "'device' = None"),
        (
            {"kind": "straggler", "device": 0, "factor": 0.5},
            "'factor' = 0.5 must be in \\[1, 1000\\]",
        ),
        ({"kind": "hang", "device": 0, "when": 3}, r"unknown field\(s\) \['when'\]"),
        ({"kind": "link_down", "link": [0]}, "must be \\[a, b\\]"),
    ],
)
def test_bad_faults_are_explained(entry, message):
    with pytest.raises(InvalidRequestError, match=message):
        load_faults([entry])
