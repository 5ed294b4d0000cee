"""KPT_SIM_VISIBLE_DEVICES, and the refusal of autograd graphs on kpt_sim:1+ without the native
guard (forced here; test_multi_device_autograd covers backward with it and a missing compiler)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from kpt.adapters.sim._visible import parse_visible

HELD = 64 * 2**20

CHILD = f"""
import json, torch, kpt.adapters.sim
from kpt.adapters.sim._runtime import runtime
held = torch.empty({HELD}, dtype=torch.uint8, device="kpt_sim:0")
w = torch.ones(3, device="kpt_sim", requires_grad=True)
(w * 2).sum().backward()  # backward works on what is this process's kpt_sim:0
daemon = runtime().client._client  # the unmapped SimClient, to look at daemon indices
print(json.dumps({{
    "count": torch.kpt_sim.device_count(),
    "daemon_index": [torch.kpt_sim.get_device_properties(i).daemon_index for i in (0, 1)],
    "grad": w.grad.cpu().tolist(),
    "daemon_allocated": [daemon.memory_stats(i)["allocated"] for i in range(3)],
    "local_free": torch.kpt_sim.mem_get_info(0)[0],
    "daemon_free": [daemon.memory_stats(i)["free"] for i in range(3)],
}}))
"""


def test_visible_devices_renumber_daemon_devices(sim, private_daemon):
    with private_daemon(devices=3) as daemon:
        env = {**os.environ, "KPT_SIM_ENDPOINT": daemon.endpoint, "KPT_SIM_VISIBLE_DEVICES": "2,0"}
        done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
    assert got["count"] == 2
    assert got["daemon_index"] == [2, 0]
    assert got["grad"] == [2.0, 2.0, 2.0]
    # Local device 0 is daemon device 2: the allocation landed there, not on daemon device 0/1.
    assert got["daemon_allocated"][2] >= HELD
    assert got["daemon_allocated"][0] < HELD and got["daemon_allocated"][1] < HELD
    assert got["local_free"] == got["daemon_free"][2]


@pytest.mark.parametrize("value", ["x", "1,1", "-1", "0,,1"])
def test_bad_visible_devices_are_named(value):
    with pytest.raises(ValueError, match="KPT_SIM_VISIBLE_DEVICES"):
        parse_visible(value)


def test_visible_devices_parse_in_order():
    assert parse_visible("3,1") == [3, 1]
    assert parse_visible("") is None


def test_visible_index_beyond_the_daemon_is_refused(sim, private_daemon):
    with private_daemon(devices=1) as daemon:
        env = {**os.environ, "KPT_SIM_ENDPOINT": daemon.endpoint, "KPT_SIM_VISIBLE_DEVICES": "3"}
        code = "import torch, kpt.adapters.sim; torch.ones(1, device='kpt_sim')"
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert "KPT_SIM_VISIBLE_DEVICES='3'" in done.stderr and "1 device(s)" in done.stderr


@pytest.fixture
def no_native_guard(monkeypatch):
    from kpt.adapters.sim import _autograd_guard

    state = _autograd_guard._State(unavailable="compiling device_count_guard.cpp failed (test)")
    monkeypatch.setattr(_autograd_guard, "_state", state)


def test_backward_on_device_1_is_refused_with_the_way_around(sim, no_native_guard):
    w = torch.ones(3, device="kpt_sim:1", requires_grad=True)
    with pytest.raises(RuntimeError, match="KPT_SIM_VISIBLE_DEVICES=1") as error:
        (w * 2).sum().backward()
    assert "torch/csrc/acc/Module.cpp" in str(error.value)
    assert "device_count_guard.cpp failed (test)" in str(error.value)  # the reason is shown


@pytest.mark.parametrize("move", ["to_cpu", "to_device_0", "from_cpu"])
def test_graphs_crossing_into_device_1_are_refused(sim, no_native_guard, move):
    with pytest.raises(RuntimeError, match="KPT_SIM_VISIBLE_DEVICES"):
        if move == "to_cpu":
            torch.ones(2, device="kpt_sim:1", requires_grad=True).cpu()
        elif move == "to_device_0":
            torch.ones(2, device="kpt_sim:1", requires_grad=True).to("kpt_sim:0")
        else:
            torch.ones(2, requires_grad=True).to("kpt_sim:1")


def test_forward_only_on_several_devices_still_works(sim):
    layer = torch.nn.Linear(4, 2)
    expected = layer(torch.ones(1, 4))
    on_1 = torch.nn.Linear(4, 2).to("kpt_sim:1")
    on_1.load_state_dict(layer.state_dict())
    with torch.no_grad():
        got = on_1(torch.ones(1, 4, device="kpt_sim:1")).to("kpt_sim:0").cpu()
        torch.testing.assert_close(got, expected.detach())
    # Tensors that need no grad build no graph, with grad mode on.
    plain = torch.arange(3.0, device="kpt_sim:1") * 2
    assert plain.cpu().tolist() == [0.0, 2.0, 4.0]
