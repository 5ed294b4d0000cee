import json

import pytest

from kpt.sim import InvalidRequestError, OpCost, Simulator, load_profile, op_time, replay


def test_chrome_trace_has_a_track_per_stream_and_link(tmp_path):
    sim = Simulator("test-asic", devices=2)
    sim.launch(0, OpCost("matmul", 1e6, 0), stream=0, name="mm")
    sim.launch(0, OpCost("matmul", 1e6, 0), stream=1)
    sim.transfer(0, 1, 1000)
    sim.collective("all_reduce", 1000, algorithm="ring")
    path = tmp_path / "trace.json"
    sim.dump_trace(path)
    doc = json.loads(path.read_text())
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert {"stream 0", "stream 1", "d0->switch", "switch->d1"} <= names
    spans = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    mm = next(e for e in spans if e["name"] == "mm")
    assert mm["ts"] == 0 and mm["dur"] == pytest.approx(2.0)  # microseconds
    processes = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    assert {"device 0 test-asic", "device 1 test-asic", "links"} <= processes


def test_a_full_trace_keeps_the_newest_events_and_counts_the_rest(tmp_path):
    # A daemon lives for days: its trace is a bounded flight recorder, not an ever-growing list.
    sim = Simulator("test-asic", trace_events=4)
    for i in range(10):
        sim.launch(0, OpCost("matmul", 1e6, 0), name=f"mm{i}")
    path = tmp_path / "trace.json"
    sim.dump_trace(path)
    doc = json.loads(path.read_text())
    kept = [e["name"] for e in doc["traceEvents"] if e["ph"] == "X"]
    assert kept == ["mm6", "mm7", "mm8", "mm9"]
    assert doc["otherData"]["dropped_events"] == 6
    with pytest.raises(ValueError, match="at least one event"):
        Simulator("test-asic", trace_events=0)


def test_replay_predicts_the_sum_of_op_times():
    profile = load_profile("h100-sxm")
    ops = [
        # 16 MiB: a copy longer than the host's issue time, so that time stays hidden too
        {"op": "alloc", "device": 0, "bytes": 1 << 24, "id": "x"},
        {"op": "h2d", "device": 0, "bytes": 1 << 24},
        *[
            {"op": "launch", "device": 0, "class": "matmul", "flops": 2 * 4096**3,
             "bytes": 6 * 4096**2, "dtype": "bf16", "shape": [4096, 4096, 4096]}
            for _ in range(10)
        ],
        {"op": "free", "id": "x"},
    ]  # fmt: skip
    result = replay({"format": "kpt-sim-ops", "version": 1, "profile": "h100-sxm", "ops": ops})
    h2d = profile.host_link_latency_s + (1 << 24) / profile.host_link_bandwidth
    assert h2d > profile.host_issue_s
    mm = op_time(profile, "matmul", 2 * 4096**3, 6 * 4096**2, "bf16", (4096, 4096, 4096))
    assert mm > profile.host_issue_s  # device-bound: the host's issue time stays hidden
    # Each matmul is queued behind earlier work (the copy, then the matmul before it), so it
    # hides the latency an idle device pays, less the gap between an eager stream's kernels;
    # the host issues faster than they run.
    assert profile.launch_latency_s > profile.queued_latency_s > 0
    assert result["predicted_s"] == pytest.approx(h2d + 10 * (mm - profile.queued_latency_s))
    assert result["ops"] == len(ops)
    (row,) = result["devices"]
    assert row["ops"] == 10 and 0 < row["utilization"] <= 1


def test_replay_of_a_file_with_events_and_collectives(tmp_path):
    ops = [
        {"op": "launch", "device": 0, "class": "elementwise", "bytes": 1e8},
        {"op": "record", "device": 0, "event": "e"},
        {"op": "wait", "device": 1, "event": "e"},
        {"op": "launch", "device": 1, "class": "elementwise", "bytes": 1e8},
        {"op": "collective", "kind": "all_reduce", "bytes": 1 << 24},
        {"op": "copy", "src": 0, "dst": 1, "bytes": 1 << 20},
        {"op": "sync"},
    ]
    path = tmp_path / "ops.json"
    path.write_text(json.dumps({"profile": "mi300x", "devices": 2, "ops": ops}))
    result = replay(path)
    dev0, dev1 = result["devices"]
    assert dev1["end_s"] >= dev0["busy_s"] * 2 * 0.99  # device 1 waited for device 0
    assert result["predicted_s"] > 0


def test_replay_errors_name_the_entry():
    with pytest.raises(InvalidRequestError, match=r"entry #1 .* missing or has a bad field"):
        replay([{"op": "sync"}, {"op": "launch", "device": 0}])
    with pytest.raises(InvalidRequestError, match="unknown op 'jump'"):
        replay([{"op": "jump"}])
    with pytest.raises(InvalidRequestError, match="format 'other'"):
        replay({"format": "other", "ops": []})


def test_the_fast_path_agrees_with_a_plain_simpy_model():
    """Per-device end times equal those of a process-per-stream simpy model with a Resource.

    Matmuls without a shape fill every compute unit, so kernels of different streams take the
    chip in turn, as that model's one engine does: the makespans agree."""
    import random

    import simpy

    rng = random.Random(3)
    profile = load_profile("h100-sxm")
    ops = [
        (rng.randrange(2), rng.randrange(3), OpCost("matmul", rng.uniform(1e6, 1e10), 1e6))
        for _ in range(300)
    ]
    sim = Simulator("h100-sxm", devices=2)
    for device, stream, cost in ops:
        sim.launch(device, cost, stream)

    env = simpy.Environment()
    engines = [simpy.Resource(env), simpy.Resource(env)]
    ends = [0.0, 0.0]
    latency = profile.queued_latency_s
    # The host issues each device's ops one after another; an op can start launch latency
    # after it was issued, and then runs for the rest of its op time.
    issued, count = [], [0, 0]
    for device, _, _ in ops:
        count[device] += 1
        issued.append(count[device] * profile.host_issue_s)

    def run_stream(device, queue):
        for ready, cost in queue:
            if ready > env.now:
                yield env.timeout(ready - env.now)
            with engines[device].request() as turn:
                yield turn
                run = op_time(profile, cost.op_class, cost.flops, cost.bytes) - latency
                yield env.timeout(run)
            ends[device] = max(ends[device], env.now)

    for device in range(2):
        for stream in range(3):
            queue = [
                (t + latency, c) for t, (d, s, c) in zip(issued, ops) if (d, s) == (device, stream)
            ]
            env.process(run_stream(device, queue))
    env.run()
    sim.synchronize()
    for device in range(2):
        assert sim.summary()[device]["end_s"] == pytest.approx(ends[device], rel=1e-12)


def test_replay_table_reads_in_units_with_the_total_first():
    from kpt.sim._replay import format_replay

    ops = [
        {"op": "alloc", "device": 0, "bytes": 3 << 20, "id": "w"},
        {"op": "launch", "device": 0, "class": "matmul", "flops": 2e6, "bytes": 0},
        {"op": "launch", "device": 1, "class": "matmul", "flops": 4e6, "bytes": 0},
        {"op": "sync"},
    ]
    doc = {"profile": "test-asic", "devices": 2, "topology": "ring", "ops": ops}
    summary = replay(doc)
    assert summary["topology"] == "ring"
    lines = format_replay(summary, "ops.json").splitlines()
    # test-asic: 1 us launch + 2e6 / 1e12 s = 3 us and 5 us
    assert lines[0] == "predicted total: 5.00 us (simulated)"
    assert lines[1].startswith("replayed 4 ops from ops.json on 2 x test-asic (ring) in ")
    header, first, second = lines[3].split(), lines[4].split(), lines[5].split()
    assert header[:3] == ["device", "profile", "kernels"]
    assert first == ["0", "test-asic", "1", "3.00", "us", "3.00", "us", "60.0%", "3.0", "MiB"]
    assert second[-3:] == ["100.0%", "0", "B"]


def test_replay_names_events_and_buffers_used_before_they_exist():
    waits = [{"op": "wait", "event": "e1", "device": 0}]
    with pytest.raises(InvalidRequestError, match=r"#0 .*event 'e1' is waited on before"):
        replay({"profile": "test-asic", "ops": waits})
    frees = [{"op": "free", "id": 7}]
    with pytest.raises(InvalidRequestError, match="buffer id 7 was never allocated"):
        replay({"profile": "test-asic", "ops": frees})
