"""PyTorch code in separate processes, on one `kpt-sim serve` daemon, through public APIs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch

TRAIN = """
import json, torch, kpt.adapters.sim
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
x, y = torch.randn(64, 16), torch.randn(64, 4)
device = "kpt_sim"  # KPT_SIM_VISIBLE_DEVICES picks which daemon device this is
model = model.to(device)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
start = torch.kpt_sim.Event(enable_timing=True); end = torch.kpt_sim.Event(enable_timing=True)
losses = []
start.record()
for _ in range(5):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x.to(device)), y.to(device))
    loss.backward(); opt.step(); losses.append(loss.item())
end.record(); end.synchronize()
print(json.dumps({"losses": losses, "sim_ms": start.elapsed_time(end),
                  "devices": torch.kpt_sim.device_count()}))
"""


def _close(got: list[float], expected: list[float]) -> bool:
    return all(abs(a - b) <= 1e-5 * max(1.0, abs(b)) for a, b in zip(got, expected, strict=True))


def _cpu_losses() -> list[float]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    x, y = torch.randn(64, 16), torch.randn(64, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_matches_cpu_and_profiles_differ_in_time(daemon: str, python_on) -> None:
    # One process per simulated device, as one process per GPU: each sees its device as kpt_sim:0.
    on_h100 = json.loads(python_on(TRAIN, daemon, KPT_SIM_VISIBLE_DEVICES="0"))
    on_mi300x = json.loads(python_on(TRAIN, daemon, KPT_SIM_VISIBLE_DEVICES="1"))
    expected = _cpu_losses()
    for result in (on_h100, on_mi300x):
        assert result["devices"] == 1
        assert _close(result["losses"], expected)
        assert result["sim_ms"] > 0
    # Two different chip profiles must not predict the very same time for the same work.
    assert on_h100["sim_ms"] != on_mi300x["sim_ms"]


def test_two_processes_share_one_daemon_at_once(daemon: str, spawn) -> None:
    children = [spawn(TRAIN, daemon, KPT_SIM_VISIBLE_DEVICES=str(i)) for i in (0, 1)]
    outputs = [json.loads(child.result()) for child in children]
    expected = _cpu_losses()
    for result in outputs:
        assert _close(result["losses"], expected)


def test_kpt_devices_lists_the_daemons_devices(daemon: str) -> None:
    env = dict(os.environ, KPT_SIM_ENDPOINT=daemon)
    done = subprocess.run(
        [sys.executable, "-m", "kpt.hal._cli", "devices", "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    devices = listed["devices"] if isinstance(listed, dict) else listed
    text = json.dumps(devices).lower()
    assert "kpt_sim:0" in text and "kpt_sim:1" in text
    assert "h100" in text and "mi300x" in text


def test_backward_on_a_second_device_of_a_shared_daemon(daemon, python_on) -> None:
    # torch's Python device guard reports one device to the autograd engine
    # (torch/csrc/acc/Module.cpp); kpt_sim's native guard reports the daemon's real count.
    code = (
        "import torch, kpt.adapters.sim\n"
        "w = torch.ones(3, device='kpt_sim:1', requires_grad=True)\n"
        "try:\n"
        "    (w * 2).sum().backward()\n"
        "    print('grad', w.grad.device, w.grad.cpu().tolist())\n"
        "except RuntimeError as error:\n"
        "    print(error)\n"
    )
    assert python_on(code, daemon).strip() == "grad kpt_sim:1 [2.0, 2.0, 2.0]"
    # Without the native guard it is refused with an error that says what to do instead.
    message = python_on(code, daemon, KPT_SIM_NATIVE_GUARD="0")
    assert "KPT_SIM_VISIBLE_DEVICES" in message and "set_multithreading_enabled" in message


def test_daemon_death_raises_device_lost_promptly(tmp_path) -> None:
    endpoint = f"ipc://{tmp_path}/dying.sock"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "kpt.sim", "serve", "--endpoint", endpoint, "--executor", "torch",
         "--parent-pid", str(os.getpid())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    code = (
        "import sys, time, torch, kpt.adapters.sim\n"
        "x = torch.ones(4, device='kpt_sim'); x.sum().item()\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    (x * 2).sum().item()\n"
        "except kpt.adapters.sim.KptSimDeviceLostError as error:\n"
        "    print('lost', round(time.monotonic() - start, 2), flush=True)\n"
    )
    env = dict(os.environ, KPT_SIM_ENDPOINT=endpoint)
    try:
        deadline = time.monotonic() + 60
        child = None
        while child is None and time.monotonic() < deadline:
            probe = subprocess.run(
                [sys.executable, "-c", "from kpt.sim import SimClient; import sys; "
                 f"c = SimClient({endpoint!r}, timeout=2.0); c.devices(); c.close()"],
                capture_output=True, timeout=30,
            )  # fmt: skip
            if probe.returncode == 0:
                child = subprocess.Popen(
                    [sys.executable, "-c", code], env=env, text=True,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )  # fmt: skip
        assert child is not None, "daemon never answered"
        assert child.stdout.readline().strip() == "ready"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        out, err = child.communicate("go\n", timeout=60)
        words = out.split()
        assert words and words[0] == "lost", (out, err)
        assert float(words[1]) < 15.0  # prompt: not a hang
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
