"""torch.kpt_sim.graph_replay() and host_work(): host time a replayed CUDA graph saves and host
work the simulator cannot see, told by the caller; values are the same either way."""

from __future__ import annotations

import pytest
import torch


def timed(sim, x, *, graph: bool, work_s: float = 0.0, device=None):
    """Simulated ms of 40 small adds (as a replayed graph or eager), host work, one more add."""
    start, end = (torch.kpt_sim.Event(enable_timing=True) for _ in range(2))
    torch.kpt_sim.synchronize()
    start.record()
    y = x
    if graph:
        with torch.kpt_sim.graph_replay(device):
            for _ in range(40):
                y = y + 1
    else:
        for _ in range(40):
            y = y + 1
    torch.kpt_sim.host_work(work_s, device)
    y = y * 2
    end.record()
    end.synchronize()
    return start.elapsed_time(end), y


def test_a_graph_replay_pays_the_host_once_and_host_work_is_charged(sim):
    x = torch.arange(8.0, device="kpt_sim")
    eager, y_eager = timed(sim, x, graph=False)
    graph, y_graph = timed(sim, x, graph=True)
    worked, _ = timed(sim, x, graph=True, work_s=2e-3)
    assert torch.equal(y_eager.cpu(), (torch.arange(8.0) + 40) * 2)
    assert torch.equal(y_graph.cpu(), y_eager.cpu())
    assert graph < eager / 4  # 40 host issues became one
    assert worked == pytest.approx(graph + 2.0, rel=0.05)  # ms: the host's 2 ms, serially


def test_host_work_overlaps_work_already_queued(sim):
    big = torch.ones(2048, 2048, device="kpt_sim")
    start, end = (torch.kpt_sim.Event(enable_timing=True) for _ in range(2))
    torch.kpt_sim.synchronize()
    start.record()
    out = big @ big
    end.record()
    end.synchronize()
    alone = start.elapsed_time(end)
    torch.kpt_sim.synchronize()
    start.record()
    out = big @ big
    torch.kpt_sim.host_work(alone / 1e3 / 2)  # half the matmul: hidden behind it
    out = out + 1
    end.record()
    end.synchronize()
    assert start.elapsed_time(end) < alone * 1.25
    assert float(out[0, 0]) == 2049.0


def test_bad_host_work_is_refused(sim):
    with pytest.raises(ValueError, match="seconds=-1"):
        torch.kpt_sim.host_work(-1)


def test_ops_that_launch_nothing_are_counted_into_the_next_launch(sim, tmp_path):
    """Views and allocations cost the host dispatch time but send the daemon nothing: the next
    launch says how many there were (the profile's host_op_us charges them), as the op trace
    shows."""
    import json

    from kpt.adapters.sim._runtime import runtime

    x = torch.arange(8.0, device="kpt_sim")
    x.mul_(1)  # the last launch before the test's: takes in the ops that made x
    torch.kpt_sim.synchronize()
    client = runtime().client
    client.record_ops(True)
    try:
        plain = x + 1
        torch.empty(3, device="kpt_sim")  # an allocation launches nothing either
        viewed = x.view(2, 4).transpose(0, 1).unsqueeze(0) + 1
        torch.kpt_sim.synchronize()
        written = client.dump_ops(str(tmp_path / "ops.json"))
        with open(written) as f:
            trace = json.load(f)
    finally:
        client.record_ops(False)
    launches = [op for op in trace["ops"] if op["op"] == "launch"]
    assert [op.get("host_ops", 0) for op in launches[-2:]] == [0, 4]
    assert torch.equal(viewed.cpu(), torch.arange(8.0).view(2, 4).T.unsqueeze(0) + 1)
    assert torch.equal(plain.cpu(), torch.arange(8.0) + 1)
