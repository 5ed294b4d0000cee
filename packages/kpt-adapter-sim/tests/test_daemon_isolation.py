"""Two processes on one daemon running the torch executor: a new buffer never shows the other's
freed values (issue 10, defect 1: torch.empty handed out recycled host memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)

WRITER = """
import torch, kpt.adapters.sim
x = torch.arange(1, 262145, dtype=torch.float32).to("kpt_sim")
torch.kpt_sim.synchronize()
del x
torch.kpt_sim.empty_cache()
torch.kpt_sim.synchronize()
"""
READER = """
import torch, kpt.adapters.sim
y = torch.empty(262144, dtype=torch.float32, device="kpt_sim").cpu()
print(int((y != 0).sum()))
"""


def test_a_second_process_never_reads_the_first_ones_freed_values(private_daemon):
    with private_daemon(executor="torch") as daemon:
        env = {**os.environ, "KPT_SIM_ENDPOINT": daemon.endpoint}
        for script in (WRITER, READER):
            run = subprocess.run(
                [sys.executable, "-c", script], env=env, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "0", f"{run.stdout.strip()} non-zero values leaked"
