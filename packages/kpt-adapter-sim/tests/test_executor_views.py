"""The torch executor's views of daemon buffers: shared bytes, cached aliases, no leaks."""

import gc
from types import SimpleNamespace

import pytest
import torch

from kpt.adapters.sim_executor import TorchExecutor


def _view(storage, dtype, shape, strides, offset=0):
    return SimpleNamespace(storage=storage, offset=offset, dtype=dtype, shape=shape,
                           strides=strides)  # fmt: skip


def test_views_of_one_buffer_share_its_bytes_across_dtypes():
    executor = TorchExecutor(threads=1)
    storage = executor.allocate(30).zero_()  # not a multiple of 8: float64 leaves a tail
    executor.view(_view(storage, "float32", [2, 3], [1, 2], offset=4)).fill_(1.5)
    as_int = executor.view(_view(storage, "int32", [7], [1]))
    assert as_int[0].item() == 0
    assert as_int[1:7].tolist() == [torch.tensor(1.5).view(torch.int32).item()] * 6
    assert executor.view(_view(storage, "float64", [3], [1])).numel() == 3


def test_misaligned_offsets_are_refused():
    executor = TorchExecutor(threads=1)
    with pytest.raises(ValueError, match="not a multiple"):
        executor.view(_view(executor.allocate(16), "float32", [1], [1], offset=2))


def test_cached_aliases_go_with_their_buffer():
    executor = TorchExecutor(threads=1)
    storage = executor.allocate(1 << 20)
    executor.view(_view(storage, "float32", [4], [1]))
    executor.view(_view(storage, "float16", [4], [1]))
    assert len(executor._typed_views) == 1
    del storage
    gc.collect()
    assert executor._typed_views == {}
