"""A daemon that dies makes the next blocking call fail promptly with a device-lost error."""

import os
import signal
import time

import pytest
import torch

PROMPT_S = 10.0  # far below any call timeout (300 s): death is noticed, not waited out


def _kill(daemon):
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.process.wait(timeout=10)


def test_blocking_read_after_daemon_death_raises_device_lost(sim, private_daemon):
    with private_daemon() as daemon:
        x = torch.arange(4.0, device="kpt_sim")
        assert x.sum().item() == 6.0
        y = x * 2  # queued, not yet sent or answered
        _kill(daemon)
        started = time.monotonic()
        with pytest.raises(sim.KptSimDeviceLostError, match="daemon") as caught:
            y.cpu()
        assert time.monotonic() - started < PROMPT_S
        assert isinstance(caught.value, RuntimeError) and caught.value.sim_error is not None


def test_synchronize_and_new_work_after_death_raise_device_lost(sim, private_daemon):
    with private_daemon() as daemon:
        x = torch.ones(8, device="kpt_sim")
        _kill(daemon)
        started = time.monotonic()
        with pytest.raises(sim.KptSimDeviceLostError):
            for _ in range(3):  # async launches may queue locally; a sync must report the loss
                x = x + 1
            torch.kpt_sim.synchronize()
        with pytest.raises(sim.KptSimDeviceLostError):  # the loss is sticky, not a one-off
            torch.zeros(1 << 20, device="kpt_sim").sum().item()
        assert time.monotonic() - started < 2 * PROMPT_S


def test_health_reports_a_dead_daemon_as_failed(sim, private_daemon):
    from kpt.adapters.sim_hal import SimAdapter

    with private_daemon() as daemon:
        adapter = SimAdapter()
        assert adapter.health(0).state == "healthy"
        _kill(daemon)
        report = adapter.health(0)
        assert report.state == "failed" and "DeviceLost" in report.reason
