"""aten._foreach_* ops on kpt_sim: optimizer parity with the CPU and one launch per chunk."""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn

from kpt.adapters.sim._foreach import CUDA_MAX_TENSORS, MAX_REFS
from kpt.adapters.sim._runtime import runtime

OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, foreach=True),
    "sgd-momentum": lambda params: torch.optim.SGD(
        params, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3, foreach=True
    ),
}


@contextmanager
def counted_launches():
    """Yields a list that collects every op name launched inside the block."""
    client = runtime().client
    launched: list[str] = []
    original = client.launch

    def launch(device, op, *rest, **options):
        launched.append(op)
        return original(device, op, *rest, **options)

    client.launch = launch
    try:
        yield launched
    finally:
        client.launch = original


def _foreach_ops(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith("aten::_foreach_")]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_foreach_optimizer_steps_match_cpu(sim, name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.LayerNorm(12), nn.GELU(), nn.Linear(12, 3))
    on_sim = copy.deepcopy(model).to("kpt_sim")
    initial = [p.detach().clone() for p in model.parameters()]
    optimizers = {"cpu": OPTIMIZERS[name](model.parameters()),
                  "kpt_sim": OPTIMIZERS[name](on_sim.parameters())}  # fmt: skip
    sim.reset_fallback_report()
    with counted_launches() as launched:
        for _ in range(4):
            x = torch.randn(5, 6)
            for device, module in (("cpu", model), ("kpt_sim", on_sim)):
                optimizers[device].zero_grad()
                module(x.to(device)).pow(2).mean().backward()
                optimizers[device].step()
        torch.kpt_sim.synchronize()
    assert _foreach_ops(launched), "the optimizer did not take its foreach path on kpt_sim"
    assert not [op for op in sim.fallback_report() if "_foreach_" in op]
    for cpu_param, sim_param, start in zip(model.parameters(), on_sim.parameters(), initial):
        assert not torch.equal(cpu_param.detach(), start)  # the steps moved the parameters
        torch.testing.assert_close(sim_param.detach().cpu(), cpu_param.detach())


def test_long_lists_run_in_chunks_and_match_cpu(sim):
    count = 70  # over one launch's worth for every depth
    hosts = [[torch.randn(3, i % 4 + 1) for i in range(count)] for _ in range(3)]
    devices = [[t.to("kpt_sim") for t in lst] for lst in hosts]
    scalars = [0.5 + i / count for i in range(count)]
    with counted_launches() as launched:
        torch._foreach_addcdiv_(devices[0], devices[1], devices[2], scalars)  # in place, depth 3
        summed = torch._foreach_add(devices[0], devices[1], alpha=2.0)  # new list, depth 3
        torch._foreach_mul_(devices[1], 3.0)  # depth 1
    torch._foreach_addcdiv_(hosts[0], hosts[1], hosts[2], scalars)
    expected_sum = torch._foreach_add(hosts[0], hosts[1], alpha=2.0)
    torch._foreach_mul_(hosts[1], 3.0)
    assert len(summed) == count
    for got, want in zip([*devices[0], *summed, *devices[1]],
                         [*hosts[0], *expected_sum, *hosts[1]]):  # fmt: skip
        torch.testing.assert_close(got.cpu(), want)
    per_depth = [min(CUDA_MAX_TENSORS[d - 1], MAX_REFS // d) for d in (3, 3, 1)]
    assert len(launched) == sum(math.ceil(count / n) for n in per_depth)
    assert all(op.startswith("aten::_foreach_") for op in launched)


def test_foreach_returning_lists_keeps_order_and_shapes(sim):
    hosts = [torch.rand(i + 1, 2) + 0.1 for i in range(40)]  # depth 2: two chunks of 32
    roots = torch._foreach_sqrt([t.to("kpt_sim") for t in hosts])
    assert [tuple(r.shape) for r in roots] == [tuple(t.shape) for t in hosts]
    for got, want in zip(roots, torch._foreach_sqrt(hosts)):
        torch.testing.assert_close(got.cpu(), want)
