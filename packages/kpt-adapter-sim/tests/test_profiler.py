"""torch.profiler on kpt_sim: simulated kernel time in the table and the Chrome trace (issue 13)."""

import json

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

PRIVATEUSE1 = torch._C._autograd.DeviceType.PrivateUse1


@pytest.fixture
def model_and_batch(sim):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    model = model.to("kpt_sim")
    batch = torch.randn(16, 32, device="kpt_sim")
    model(batch).sum().backward()  # warm: plans cached, buffers allocated
    torch.kpt_sim.synchronize()
    return model, batch


def test_the_table_shows_simulated_kernel_time_per_op(model_and_batch):
    model, batch = model_and_batch
    start, end = torch.kpt_sim.Event(enable_timing=True), torch.kpt_sim.Event(enable_timing=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.PrivateUse1]) as prof:
        start.record()
        model(batch).sum().backward()
        end.record()
    end.synchronize()
    rows = prof.key_averages()
    kernels = [r for r in rows if r.device_type == PRIVATEUSE1]
    assert {"aten::addmm.out", "aten::mm.out", "aten::relu.out"} <= {r.key for r in kernels}
    device_us = sum(r.self_device_time_total for r in kernels)
    # One stream, one after another: the kernels fit inside the simulated window.
    assert 0 < device_us <= start.elapsed_time(end) * 1000 * 1.001
    addmm = next(r for r in rows if r.key == "aten::addmm" and r.device_type != PRIVATEUSE1)
    assert addmm.device_time_total > 0  # the host op owns its kernel, as with CUDA
    linear = next(r for r in rows if r.key == "aten::linear")
    assert linear.device_time_total == pytest.approx(addmm.device_time_total)
    table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=5)
    assert "Self KPT_SIM" in table and "aten::mm.out" in table


def test_the_chrome_trace_has_a_lane_per_stream(model_and_batch, tmp_path):
    model, batch = model_and_batch
    side = torch.kpt_sim.Stream()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.PrivateUse1]) as prof:
        y = model(batch)
        side.wait_stream(torch.kpt_sim.current_stream())
        with torch.kpt_sim.stream(side):
            z = torch.relu(y) * 2
        torch.kpt_sim.current_stream().wait_stream(side)
        z.sum().item()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel" and e.get("pid") == 0]
    assert {e["name"] for e in kernels} >= {"aten::addmm.out", "aten::mul.out"}
    assert all(e["dur"] > 0 and e["args"]["simulated"] for e in kernels)
    lanes = {e["tid"] for e in kernels}
    assert len(lanes) == 2, lanes
    mul = next(e for e in kernels if e["name"] == "aten::mul.out")
    addmm = next(e for e in kernels if e["name"] == "aten::addmm.out")
    assert mul["tid"] != addmm["tid"]
    names = {
        e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("pid") == 0
        and e.get("name") == "process_name"
    }  # fmt: skip
    assert names == {"kpt_sim:0 (h100-sxm), simulated time"}
    threads = {e["tid"] for e in events if e.get("name") == "thread_name" and e.get("pid") == 0}
    assert lanes <= threads
    host_ops = [e for e in events if e.get("ph") == "X" and e.get("name") == "aten::addmm"]
    assert host_ops  # kineto's own host events are kept


def test_a_cpu_only_profiler_adds_no_device_events(model_and_batch):
    model, batch = model_and_batch
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(batch).sum().item()
    assert not [e for e in prof.events() if e.device_type == PRIVATEUSE1]
