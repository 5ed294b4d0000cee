"""Issue 13's "done when": a training script written for CUDA runs on kpt_sim by changing the
device string, with the CPU's values: DataLoader(pin_memory=True), autocast + GradScaler,
torch.accelerator calls, the profiler, a checkpoint saved and loaded with default arguments."""

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, TensorDataset

import kpt.adapters.sim as ks

PRIVATEUSE1 = torch._C._autograd.DeviceType.PrivateUse1


def cuda_style_training(device: str, checkpoint, amp: bool) -> dict:
    """What a CUDA user writes, with ``device`` in place of "cuda"."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 8), torch.randint(0, 3, (32,)))
    loader = DataLoader(data, batch_size=8, pin_memory=True)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler(device, enabled=amp)
    activities = [ProfilerActivity.CPU]
    if device != "cpu":
        activities.append(ProfilerActivity.PrivateUse1)
    losses = []
    with profile(activities=activities) as prof:
        for x, y in loader:
            assert x.is_pinned()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
    kernels = [e for e in prof.key_averages() if e.device_type == PRIVATEUSE1]
    result = {"losses": losses, "device_us": sum(e.self_device_time_total for e in kernels)}
    if device != "cpu":
        accelerator = torch.accelerator.current_accelerator()
        torch.accelerator.synchronize()
        result["accelerator"] = accelerator.type
        result["allocated"] = torch.accelerator.memory.memory_allocated()
    torch.save(model.state_dict(), checkpoint)
    reloaded = torch.load(checkpoint)  # defaults: weights_only=True, tensors where they were
    result["reloaded_device"] = {t.device.type for t in reloaded.values()}
    on_cpu = torch.load(checkpoint, map_location="cpu")
    result["params"] = {k: v.clone() for k, v in on_cpu.items()}
    return result


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
def test_a_cuda_script_runs_on_kpt_sim_with_the_cpus_values(sim, tmp_path, amp):
    expected = cuda_style_training("cpu", tmp_path / "cpu.pt", amp)
    ks.reset_fallback_report()
    got = cuda_style_training("kpt_sim", tmp_path / "sim.pt", amp)
    assert ks.fallback_report() == {}  # everything ran on the device, GradScaler's ops too
    assert got["accelerator"] == "kpt_sim" and got["allocated"] > 0
    assert got["device_us"] > 0 and expected["device_us"] == 0
    assert got["reloaded_device"] == {"kpt_sim"}
    if amp:  # CUDA's autocast lists on kpt_sim, the CPU's on the CPU: bf16 rounding apart
        assert got["losses"] == pytest.approx(expected["losses"], rel=2e-2)
        for name, value in expected["params"].items():
            assert torch.allclose(got["params"][name], value, atol=2e-2), name
    else:
        assert got["losses"] == expected["losses"]
        for name, value in expected["params"].items():
            assert torch.equal(got["params"][name], value), name
