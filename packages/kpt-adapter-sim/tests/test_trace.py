"""torch.kpt_sim.trace(path): a Perfetto trace with op args, memory counters, the host lane."""

import json

import pytest
import torch


def test_trace_writes_ops_with_args_memory_and_host_lane(sim, tmp_path):
    x = torch.randn(64, 32, device="kpt_sim")
    w = torch.randn(32, 16, device="kpt_sim")
    torch.kpt_sim.synchronize()
    path = tmp_path / "step.json"
    with torch.kpt_sim.trace(path):
        y = torch.relu(x @ w)
        y.sum().item()
    document = json.loads(path.read_text())
    events = document["traceEvents"]
    device_ops = [e for e in events if e.get("ph") == "X" and e.get("pid") == 0 and "args" in e]
    names = [e["name"] for e in device_ops]
    assert any("mm" in n for n in names) and any("relu" in n for n in names), names
    mm = next(e for e in device_ops if "mm" in e["name"])
    assert mm["args"]["inputs"] == ["float32[64, 32]", "float32[32, 16]"]
    assert mm["args"]["flops"] == pytest.approx(2 * 64 * 32 * 16)
    assert mm["dur"] > 0  # simulated microseconds
    counters = [e for e in events if e.get("ph") == "C" and e.get("pid") == 0]
    assert counters and all(c["args"]["bytes"] > 0 for c in counters)
    host = [e for e in events if e.get("pid") == 999_999 and e.get("ph") == "X"]
    assert len(host) == document["otherData"]["launches"] >= 3
    labels = {e["args"]["name"] for e in events if e.get("name") == "process_name"}
    assert "kpt_sim:0 (h100-sxm)" in labels
    # Work before the trace is not in it.
    assert document["otherData"]["launches_matched"] == document["otherData"]["launches"]


def test_nested_trace_is_refused(sim, tmp_path):
    outer, inner = torch.kpt_sim.trace(tmp_path / "a.json"), torch.kpt_sim.trace(tmp_path / "b")
    with outer, pytest.raises(RuntimeError, match="already open"), inner:
        pass
