"""The torch executor's views of daemon buffers: shared bytes, cached aliases, no leaks."""

import gc
import math
from types import SimpleNamespace

import pytest
import torch

from kpt.adapters.sim_executor import TorchExecutor


def _view(storage, dtype, shape, strides, offset=0):
    return SimpleNamespace(storage=storage, offset=offset, dtype=dtype, shape=shape,
                           strides=strides)  # fmt: skip


def test_views_of_one_buffer_share_its_bytes_across_dtypes():
    executor = TorchExecutor()
    storage = executor.allocate(30).zero_()  # not a multiple of 8: float64 leaves a tail
    executor.view(_view(storage, "float32", [2, 3], [1, 2], offset=4)).fill_(1.5)
    as_int = executor.view(_view(storage, "int32", [7], [1]))
    assert as_int[0].item() == 0
    assert as_int[1:7].tolist() == [torch.tensor(1.5).view(torch.int32).item()] * 6
    assert executor.view(_view(storage, "float64", [3], [1])).numel() == 3


def test_misaligned_offsets_are_refused():
    executor = TorchExecutor()
    with pytest.raises(ValueError, match="not a multiple"):
        executor.view(_view(executor.allocate(16), "float32", [1], [1], offset=2))


def test_cached_aliases_go_with_their_buffer():
    executor = TorchExecutor()
    storage = executor.allocate(1 << 20)
    executor.view(_view(storage, "float32", [4], [1]))
    executor.view(_view(storage, "float16", [4], [1]))
    assert len(executor._typed_views) == 1
    del storage
    gc.collect()
    assert executor._typed_views == {}


def test_an_out_op_that_resizes_its_output_on_the_way_runs_on_a_buffer_that_was_read():
    # mse_loss.out's CPU kernel resizes its 0-d output to the inputs' shape before reducing;
    # a read of the buffer (a client's .item()) must leave its storage resizable.
    executor = TorchExecutor()
    a, b = torch.randn(32, 64), torch.randn(32, 64)
    storages = [executor.allocate(a.numel() * 4) for _ in range(2)]
    out = executor.allocate(512)
    for storage, value in zip(storages, (a, b)):
        executor.write(storage, 0, memoryview(value.numpy()).cast("B"))
    executor.read(out, 0, 4)
    views = [_view(s, "float32", [32, 64], [64, 1]) for s in storages]
    executor.run("aten::mse_loss.out", [*views, _view(out, "float32", [], [])], [],
                 {"args": [{"__t": 0}, {"__t": 1}, 1], "kwargs": {"out": {"__t": 2}}})  # fmt: skip
    loss = executor.view(_view(out, "float32", [], [])).item()
    assert loss == pytest.approx(torch.nn.functional.mse_loss(a, b).item(), rel=1e-6)


def test_kpt_sim_own_ops_are_allowed_by_name_and_nothing_else_of_their_namespace():
    executor = TorchExecutor()
    x, h = torch.randn(4, 2, 3), torch.randn(1, 2, 5)  # one direction
    params = [torch.randn(15, 3), torch.randn(15, 5)]
    tensors = [x, h, *params]
    storages = [executor.allocate(t.numel() * 4) for t in tensors]
    for storage, value in zip(storages, tensors):
        executor.write(storage, 0, memoryview(value.numpy()).cast("B"))
    views = [_view(s, "float32", list(t.shape), list(t.stride()))
             for s, t in zip(storages, tensors)]  # fmt: skip
    shapes = (([4, 2, 5], [10, 5, 1]), ([1, 2, 5], [10, 5, 1]))  # the output, the last hidden
    outs = [_view(executor.allocate(4 * math.prod(shape)), "float32", shape, strides)
            for shape, strides in shapes]  # fmt: skip
    args = [{"__t": 0}, {"__t": 1}, [{"__t": 2}, {"__t": 3}], "gru"]
    executor.run("kpt::rnn_layer.default", views, outs, {"args": args})
    expected, hy = torch.gru(x, h, params, False, 1, 0.0, False, False, False)
    assert torch.equal(executor.view(outs[0]), expected)
    assert torch.equal(executor.view(outs[1]), hy)
    for name in ("kpt::load_file.default", "kpt::rnn_layer_evil.default"):
        with pytest.raises(ValueError, match="allow-list"):
            executor.run(name, views, outs, {"args": args})
    with pytest.raises(ValueError, match="mode 'lstm'"):
        executor.run("kpt::rnn_layer.default", views, outs, {"args": [*args[:3], "lstm"]})
    with pytest.raises(ValueError, match="2 or 4 parameters a direction, got 1"):
        one_weight = [*args[:2], [{"__t": 2}], "gru"]
        executor.run("kpt::rnn_layer.default", views, outs, {"args": one_weight})
    # A layer of a stack says how many layers it holds: its cost changes, never its values.
    executor.run("kpt::rnn_layer.default", views, outs, {"args": [*args, 3]})
    assert torch.equal(executor.view(outs[0]), expected)
    with pytest.raises(ValueError, match=r"layers .* must be >= 1, got 0"):
        executor.run("kpt::rnn_layer.default", views, outs, {"args": [*args, 0]})
