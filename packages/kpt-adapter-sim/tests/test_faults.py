"""Faults injected in the simulator surface as typed torch errors on the work they affect."""

import time

import pytest
import torch

from kpt.sim import SimClient


def _inject(daemon, kind, **spec):
    # From a second connection, as an operator or a CI harness would.
    client = SimClient(daemon.endpoint, admin_token=daemon.admin_token)
    try:
        client.inject_fault(kind, **spec)
    finally:
        client.close()


def test_device_lost_surfaces_on_the_next_blocking_call(sim, private_daemon):
    with private_daemon() as daemon:
        x = torch.arange(4.0, device="kpt_sim")
        assert x.sum().item() == 6.0
        _inject(daemon, "device_lost", device=0)
        with pytest.raises(sim.KptSimDeviceLostError, match="lost") as caught:
            (x + 1).cpu()
        assert isinstance(caught.value, sim.KptSimError)


def test_hang_raises_hang_error_at_synchronize_without_waiting_wall_time(sim, private_daemon):
    with private_daemon() as daemon:
        x = torch.ones(16, device="kpt_sim")
        torch.kpt_sim.synchronize()
        _inject(daemon, "hang", device=0)
        y = x * 3  # queued: launching never blocks
        started = time.monotonic()
        with pytest.raises(sim.KptSimHangError, match=r"hang|did not finish|timeout"):
            torch.kpt_sim.synchronize()
        assert time.monotonic() - started < 10  # the timeout is simulated seconds
        del y


def test_memory_error_hits_the_tensor_whose_buffer_it_corrupts(sim, private_daemon):
    with private_daemon() as daemon:
        x = torch.arange(1024.0, device="kpt_sim")
        torch.kpt_sim.synchronize()  # x is the device's only live buffer: the fault picks it
        _inject(daemon, "memory_error", device=0)
        with pytest.raises(sim.KptSimMemoryFaultError) as caught:
            x.cpu()
        assert "ECC" in str(caught.value) or "memory" in str(caught.value).lower()


def test_fault_file_schedules_a_loss_mid_run(sim, private_daemon, tmp_path):
    faults = tmp_path / "faults.toml"
    faults.write_text('[[fault]]\nkind = "device_lost"\ndevice = 0\nafter_ops = 20\n')
    with private_daemon(faults=faults):
        x = torch.ones(64, device="kpt_sim")
        with pytest.raises(sim.KptSimDeviceLostError):
            for _ in range(50):
                x = x * 1.0 + 1.0
            x.cpu()


def test_errors_keep_torch_types(sim):
    assert issubclass(sim.KptSimOutOfMemoryError, torch.OutOfMemoryError)
    for error in (sim.KptSimDeviceLostError, sim.KptSimHangError, sim.KptSimMemoryFaultError):
        assert issubclass(error, RuntimeError)  # what PyTorch code already catches
