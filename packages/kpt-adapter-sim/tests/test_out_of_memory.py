"""An allocation the daemon refuses raises torch.OutOfMemoryError at that allocation.

On a shared daemon another process can take the memory this one would have allocated without a
round trip: the refusal must still surface at the allocation (not as an invalid-request error
on a later call), and name the device, the bytes requested and the bytes free.
"""

import re

import pytest
import torch

from kpt.sim import SimClient

MIB = 1 << 20


def _numbers_in(message: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", message)]


@pytest.mark.parametrize("request_mib", [64, 1 << 17], ids=["small", "huge"])
def test_allocation_refused_on_a_shared_daemon_raises_at_the_allocation(
    sim, private_daemon, request_mib
):
    with private_daemon(numerics=False) as daemon:
        torch.kpt_sim.synchronize()
        free, total = torch.kpt_sim.mem_get_info()
        other = SimClient(daemon.endpoint)
        try:
            hog = other.alloc(0, free - 16 * MIB)  # another process takes nearly everything
            requested = request_mib * MIB
            allocated = torch.kpt_sim.memory_allocated()
            with pytest.raises(torch.OutOfMemoryError) as caught:
                torch.empty(requested, dtype=torch.uint8, device="kpt_sim")
            error = caught.value
            assert isinstance(error, sim.KptSimOutOfMemoryError)
            message = str(error)
            assert "kpt_sim:0" in message and "requested" in message and "free" in message
            assert error.device == 0 and error.requested >= requested
            assert 0 <= error.free < requested and error.total == total
            assert error.requested in _numbers_in(message) and error.free in _numbers_in(message)
            # Nothing was left half-done: no bytes counted, and allocations work again.
            assert torch.kpt_sim.memory_allocated() == allocated
            other.free(hog)
            other.synchronize()
            kept = torch.empty(requested // 2, dtype=torch.uint8, device="kpt_sim")
            torch.kpt_sim.synchronize()
            assert torch.kpt_sim.memory_allocated() >= allocated + kept.numel()
        finally:
            other.close()
