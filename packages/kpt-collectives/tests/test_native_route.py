"""The native route (nccl for cuda, xccl for xpu) makes the same library calls on any
ProcessGroup: checked here over a one-rank gloo group, since CI has no GPU."""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

from kpt.collectives._host_route import NativeRoute, make_gloo


def test_the_native_routes_calls_reach_the_library_and_come_back_with_values():
    library = make_gloo(dist.HashStore(), 0, 1, datetime.timedelta(seconds=30))
    route = NativeRoute(library, 1)
    summed = torch.arange(4.0)
    route.all_reduce(summed, dist.ReduceOp.SUM).wait()
    assert torch.equal(summed, torch.arange(4.0))
    gathered = torch.zeros(3)
    route.all_gather(gathered, torch.tensor([1.0, 2.0, 3.0])).wait()
    assert torch.equal(gathered, torch.tensor([1.0, 2.0, 3.0]))
    scattered = torch.zeros(2)
    route.reduce_scatter(scattered, torch.tensor([5.0, 6.0]), dist.ReduceOp.SUM).wait()
    assert torch.equal(scattered, torch.tensor([5.0, 6.0]))
