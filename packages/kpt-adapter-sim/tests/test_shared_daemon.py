"""Two processes share one daemon through KPT_SIM_ENDPOINT: same devices, same memory."""

import os
import subprocess
import sys
import time

import torch

HELD = 256 * 2**20

CHILD = f"""
import sys, torch, kpt.adapters.sim
held = torch.empty({HELD}, dtype=torch.uint8, device="kpt_sim:1")
a = torch.arange(12.0, device="kpt_sim:1").view(3, 4)
print("result", (a @ a.t()).sum().item(), torch.kpt_sim.device_count(), flush=True)
sys.stdin.readline()  # hold the memory until the parent has looked
"""


def _free(device: int) -> int:
    return torch.kpt_sim.mem_get_info(device)[0]


def test_two_processes_share_devices_and_memory(sim, private_daemon):
    with private_daemon(devices=2) as daemon:
        free_before = _free(1)
        env = {**os.environ, "KPT_SIM_ENDPOINT": daemon.endpoint}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            line = child.stdout.readline().split()
            assert line[:1] == ["result"], child.stderr.read() if child.poll() else line
            a = torch.arange(12.0).view(3, 4)
            assert float(line[1]) == (a @ a.t()).sum().item() and int(line[2]) == 2
            # This process works on device 0 meanwhile, and sees the child's allocation.
            x = torch.arange(12.0, device="kpt_sim:0").view(3, 4)
            torch.testing.assert_close((x @ x.t()).cpu(), a @ a.t())
            assert free_before - _free(1) >= HELD
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(timeout=60) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
            child.stdin.close()
            child.stdout.close()
            child.stderr.close()
        deadline = time.monotonic() + 10  # the daemon frees a departed client's buffers
        while free_before - _free(1) >= HELD and time.monotonic() < deadline:
            time.sleep(0.1)
        assert free_before - _free(1) < HELD
