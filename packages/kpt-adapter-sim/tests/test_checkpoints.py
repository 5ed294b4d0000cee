"""Checkpoints saved on kpt_sim load with torch.load's defaults, on any map_location, anywhere.

Saved tensors use PyTorch's own path for storage-less PrivateUse1 tensors
(torch._utils._rebuild_device_tensor_from_cpu_tensor, on the weights_only allow-list), so a file
written on kpt_sim opens with weights_only=True and without kpt installed (map_location="cpu").
"""

import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.timeout(120)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_state_dict_saved_on_kpt_sim_loads_with_defaults(sim, tmp_path):
    cpu = _model()
    model = _model().to("kpt_sim")
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "step": 7}, path)
    loaded = torch.load(path)  # weights_only=True by default
    assert loaded["step"] == 7
    for name, tensor in cpu.state_dict().items():
        restored = loaded["model"][name]
        assert restored.device == torch.device("kpt_sim", 0), name
        assert torch.equal(restored.cpu(), tensor), name
    on_cpu = torch.load(path, map_location="cpu")["model"]
    assert all(t.device.type == "cpu" and type(t) is torch.Tensor for t in on_cpu.values())
    assert torch.equal(on_cpu["0.weight"], cpu[0].weight.detach())
    on_one = torch.load(path, map_location="kpt_sim:1")["model"]
    assert on_one["0.bias"].device == torch.device("kpt_sim", 1)
    fresh = _model().to("kpt_sim")
    fresh.load_state_dict(loaded["model"])
    assert torch.equal(fresh[0].weight.cpu(), cpu[0].weight.detach())


def test_views_and_parameters_round_trip(sim, tmp_path):
    base = torch.arange(12.0, device="kpt_sim").view(3, 4)
    column = base[:, 1]  # a strided view
    weight = torch.nn.Parameter(torch.ones(2, 2, device="kpt_sim"))
    path = tmp_path / "views.pt"
    torch.save({"column": column, "weight": weight}, path)
    loaded = torch.load(path, weights_only=False)
    assert torch.equal(loaded["column"].cpu(), torch.tensor([1.0, 5.0, 9.0]))
    assert isinstance(loaded["weight"], torch.nn.Parameter) and loaded["weight"].requires_grad
    assert loaded["weight"].device.type == "kpt_sim"


def test_a_file_saved_on_kpt_sim_opens_without_kpt(sim, tmp_path):
    path = tmp_path / "portable.pt"
    torch.save({"w": torch.arange(6.0, device="kpt_sim")}, path)
    code = (
        "import sys, torch; w = torch.load(sys.argv[1], map_location='cpu')['w']; "
        "assert 'kpt' not in ' '.join(sys.modules), 'kpt was imported'; print(w.tolist())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True, text=True, timeout=90, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]"


def test_a_cpu_checkpoint_loads_onto_kpt_sim_without_crashing(sim, tmp_path):
    cpu = _model()
    path = tmp_path / "cpu.pt"
    torch.save(cpu.state_dict(), path)
    for location in ("kpt_sim", "kpt_sim:1", torch.device("kpt_sim", 0), {"cpu": "kpt_sim:1"}):
        loaded = torch.load(path, map_location=location)
        for name, tensor in cpu.state_dict().items():
            assert loaded[name].device.type == "kpt_sim", (location, name)
            assert torch.equal(loaded[name].cpu(), tensor), (location, name)
    model = _model().to("kpt_sim")
    model.load_state_dict(torch.load(path, map_location="kpt_sim"))
    x = torch.randn(5, 4)
    model.eval(), cpu.eval()
    torch.testing.assert_close(model(x.to("kpt_sim")).cpu(), cpu(x))
