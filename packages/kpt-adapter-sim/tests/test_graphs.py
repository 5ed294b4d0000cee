"""torch.kpt_sim.Graph: CUDA graphs on a simulated chip. A replay computes what the captured
code computes on new inputs, is timed as one replay, keeps its memory in a private pool, and
what a capture cannot hold is refused."""

from __future__ import annotations

import pytest
import torch


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.LayerNorm(32), torch.nn.Linear(32, 8)
    )


def elapsed_ms(run) -> float:
    start, end = (torch.kpt_sim.Event(enable_timing=True) for _ in range(2))
    torch.kpt_sim.synchronize()
    start.record()
    run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


@torch.no_grad()
def test_a_replay_computes_the_captured_model_on_new_inputs(sim):
    cpu = mlp()
    model = mlp().to("kpt_sim")
    static_in = torch.zeros(4, 16, device="kpt_sim")
    g = torch.kpt_sim.Graph()
    with torch.kpt_sim.graph(g):
        static_out = model(static_in)
    for seed in range(3):
        x = torch.randn(4, 16, generator=torch.Generator().manual_seed(seed))
        static_in.copy_(x.to("kpt_sim"))
        g.replay()
        torch.testing.assert_close(static_out.cpu(), cpu(x), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_a_replay_costs_the_host_one_launch_and_no_python(sim):
    model = mlp().to("kpt_sim")
    x = torch.randn(4, 16, device="kpt_sim")
    g = torch.kpt_sim.Graph()
    with torch.kpt_sim.graph(g):
        model(x)

    def marked():
        with torch.kpt_sim.graph_replay():
            model(x)

    eager, replay = elapsed_ms(lambda: model(x)), elapsed_ms(g.replay)
    assert replay < eager / 2  # one host launch for the graph's kernels
    assert replay == pytest.approx(elapsed_ms(marked), rel=1e-6)  # the same kernels


@torch.no_grad()
def test_capture_memory_is_private_to_the_pool_and_returns_when_reset(sim):
    x = torch.randn(64, 64, device="kpt_sim")
    pool = torch.kpt_sim.graph_pool_handle()
    graphs, outs = [], []
    for _ in range(3):  # graphs captured one after another share the pool's freed buffers
        g = torch.kpt_sim.Graph()
        with torch.kpt_sim.graph(g, pool=pool):
            outs.append(((x + 1) * 2).sum(0))
        graphs.append(g)
    free = {key: list(ids) for key, ids in pool.free.items()}
    assert free  # the dead intermediates stay in the pool, not in the cache
    fresh = torch.empty(64, 64, device="kpt_sim")  # the same size class as the intermediates
    assert fresh.untyped_storage()._sim.buffer not in free[(0, 64 * 64 * 4)]
    del fresh
    reserved = torch.kpt_sim.memory_reserved()
    outs.clear()  # outputs die: their buffers go to the pool while a graph lives
    assert sum(map(len, pool.free.values())) > sum(map(len, free.values()))
    for g in graphs:
        g.reset()
    assert not pool.free  # the last reset gave the pool's buffers to the cache
    assert torch.kpt_sim.memory_reserved() == reserved  # kept, as CUDA's cache keeps them


@torch.no_grad()
def test_random_ops_draw_new_numbers_at_each_replay(sim):
    x = torch.ones(4096, device="kpt_sim")
    g = torch.kpt_sim.Graph()
    with torch.kpt_sim.graph(g):
        y = torch.nn.functional.dropout(x, 0.5)
    masks = []
    for _ in range(2):
        g.replay()
        masks.append(y.cpu() != 0)
    assert 0.4 < masks[0].float().mean() < 0.6  # a real dropout: half kept, scaled by 2
    assert set(y.cpu().unique().tolist()) <= {0.0, 2.0}
    assert not torch.equal(masks[0], masks[1])


@torch.no_grad()
def test_what_a_capture_cannot_hold_is_refused_and_the_device_works_on(sim):
    x = torch.ones(8, device="kpt_sim")
    g = torch.kpt_sim.Graph()
    with (
        pytest.raises(Exception, match="read on device 0 while it captures"),
        torch.kpt_sim.graph(g),
    ):
        (x + 1).cpu()
    with pytest.raises(RuntimeError, match="replay\\(\\) before a capture ended"):
        g.replay()
    with torch.kpt_sim.graph(g):  # the same graph object captures afresh after a failure
        y = x * 3
    g.replay()
    assert torch.equal(y.cpu(), torch.full((8,), 3.0))
    with pytest.raises(RuntimeError, match="already captured"):
        g.capture_begin()
    assert float((x + 1).sum()) == 16.0  # nothing is left capturing
