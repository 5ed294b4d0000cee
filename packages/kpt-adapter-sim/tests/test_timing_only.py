"""Timing-only mode (KPT_SIM_NUMERICS=0): the same code runs at sizes the host could not hold."""

import os
import resource

import torch
import torch.nn as nn

WIDTH, LAYERS = 32768, 16  # 16 bf16 layers of 2 GiB: 32 GiB of weights, 32 GiB of grads


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_model_larger_than_host_memory_runs_and_is_timed(sim, private_daemon):
    weight_bytes = LAYERS * WIDTH * WIDTH * 2
    with private_daemon(numerics=False, profile="h100-sxm"):
        from kpt.adapters.sim._runtime import runtime

        assert runtime().numerics is False
        rss_before = _rss_bytes()
        model = nn.Sequential(
            *(nn.Linear(WIDTH, WIDTH, bias=False, device="kpt_sim", dtype=torch.bfloat16)
              for _ in range(LAYERS))
        )  # fmt: skip
        x = torch.randn(8, WIDTH, device="kpt_sim", dtype=torch.bfloat16)
        start, end = torch.kpt_sim.Event(enable_timing=True), torch.kpt_sim.Event(True)
        start.record()
        model(x).float().sum().backward()
        end.record()
        end.synchronize()
        elapsed_s = start.elapsed_time(end) / 1e3
        assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
        assert torch.kpt_sim.max_memory_allocated() >= 2 * weight_bytes  # weights + grads
        # Forward reads every weight, backward reads them again and writes their grads: the
        # simulated step cannot beat moving those bytes at the profile's memory bandwidth.
        bandwidth = runtime().devices[0]["hbm_bandwidth"]
        assert elapsed_s >= 3 * weight_bytes / bandwidth
        assert elapsed_s < 10.0  # and it is a timed step, not a hang timeout
        # Storage is remote and valueless: the client holds none of those 64 GiB.
        assert _rss_bytes() - rss_before < 512 * 2**20
        del model, x
