"""kpt_sim storages resize as FSDP2 needs: resize_(0) gives the daemon buffer back, resize_(n)
takes a new one that every view sees (kpt-adapter-sim's _storage.py, used by FSDP2 here)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def sim() -> Iterator[None]:
    """kpt_sim in this process on its own embedded daemon, shut down afterwards."""
    previous = os.environ.pop("KPT_SIM_ENDPOINT", None)
    import kpt.adapters.sim as ks

    torch.zeros(1, device="kpt_sim")
    try:
        yield
    finally:
        ks.shutdown()
        if previous is not None:
            os.environ["KPT_SIM_ENDPOINT"] = previous


def test_untyped_storage_reports_the_buffer_and_views_share_it(sim):
    x = torch.arange(16.0, device="kpt_sim")
    y = torch.arange(16.0, device="kpt_sim")
    storage = x.untyped_storage()
    assert isinstance(storage, torch.UntypedStorage)
    assert storage.device == torch.device("kpt_sim", 0)
    assert storage.size() >= 64 and storage.nbytes() == storage.size()
    assert x[4:8].untyped_storage().data_ptr() == storage.data_ptr() != 0
    assert y.untyped_storage().data_ptr() != storage.data_ptr()


def test_resize_to_zero_frees_the_buffer_and_regrowing_serves_every_view(sim):
    from torch.distributed.fsdp._fully_shard._fsdp_param import alloc_storage, free_storage

    before = torch.kpt_sim.memory_allocated()
    x = torch.zeros(1024, device="kpt_sim")  # 4 KiB
    view = x[256:260]
    assert torch.kpt_sim.memory_allocated() - before == 4096
    free_storage(x)  # FSDP2's own helper: untyped_storage().resize_(0)
    assert x.untyped_storage().size() == 0 and view.untyped_storage().data_ptr() == 0
    assert torch.kpt_sim.memory_allocated() == before
    alloc_storage(x)  # resize_(numel * itemsize): a new buffer
    assert torch.kpt_sim.memory_allocated() - before == 4096
    x.copy_(torch.arange(1024.0))
    assert view.cpu().tolist() == [256.0, 257.0, 258.0, 259.0]
    del x, view
    assert torch.kpt_sim.memory_allocated() == before


def test_growing_a_storage_keeps_its_bytes(sim):
    x = torch.arange(4.0, device="kpt_sim")
    x.untyped_storage().resize_(1 << 20)
    assert x.untyped_storage().size() >= 1 << 20
    assert x.cpu().tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(RuntimeError, match="must be >= 0"):
        x.untyped_storage().resize_(-1)
