"""What torch asks of an accelerator, answered for kpt_sim (native hooks and device allocator):
pinned host memory, torch.accelerator.synchronize and torch.accelerator.memory."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from kpt.adapters.sim._autograd_guard import native_guard_reason


@pytest.fixture
def native(sim):
    reason = native_guard_reason()
    if reason is not None:
        pytest.skip(f"kpt_sim's native library is not loaded: {reason}")
    return sim


def test_pin_memory_and_a_pinning_data_loader(native):
    pinned = torch.arange(6.0).pin_memory()
    assert pinned.is_pinned() and not torch.arange(6.0).is_pinned()
    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=4, pin_memory=True)
    seen = []
    for (batch,) in loader:
        assert batch.is_pinned()
        seen += batch.to("kpt_sim", non_blocking=True).cpu().tolist()
    assert seen == [float(i) for i in range(8)]


def test_accelerator_synchronize_and_memory_api(native):
    assert torch.accelerator.current_accelerator().type == "kpt_sim"
    x = torch.randn(1000, device="kpt_sim")
    torch.accelerator.synchronize()
    torch.accelerator.synchronize(0)
    memory = torch.accelerator.memory
    assert memory.memory_allocated() == torch.kpt_sim.memory_allocated() >= x.numel() * 4
    assert memory.memory_reserved() == torch.kpt_sim.memory_reserved()
    assert memory.max_memory_allocated() >= memory.memory_allocated()
    stats = memory.memory_stats()
    assert stats["allocated_bytes.all.current"] == memory.memory_allocated()
    del x
    memory.empty_cache()
    assert memory.memory_reserved() == torch.kpt_sim.memory_reserved()
    memory.reset_peak_memory_stats()
    assert memory.max_memory_allocated() == memory.memory_allocated()


def test_torch_storage_on_kpt_sim_is_refused_not_a_crash(native):
    with pytest.raises(RuntimeError, match="no torch storage"):
        torch.UntypedStorage(16, device="kpt_sim")
