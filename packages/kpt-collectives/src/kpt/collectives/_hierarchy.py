"""A mixed group's all_reduce by the hierarchical plan (_plan.py), when the cost model picks it.

The ranks fall into vendor groups by device kind (all kpt_sim ranks of one daemon, all cuda
ranks, all cpu ranks, ...). With every group of the same size g >= 2:
  1. reduce-scatter inside each group, over the group's own route (the daemon for kpt_sim,
     nccl or xccl for cuda and xpu, gloo for cpu): rank i of a group holds shard i of its
     group's sum;
  2. all-reduce each shard across the groups, on host copies, with gloo among the ranks that
     hold the same shard (one per group);
  3. all-gather inside each group, over its own route again.
Each rank moves 1/g of the tensor over the network instead of all of it, and the rest over its
vendor's links: FlagCX's intra / cross / intra plan, chosen by the measured-rate cost model.
The sub-groups are made at the first such all_reduce (every rank makes them together).
"""

from __future__ import annotations

import datetime
from typing import Any

import torch
import torch.distributed as dist

from kpt.collectives._host_route import HostRoute, divide, make_gloo, make_native
from kpt.collectives._plan import plans
from kpt.collectives._sim_route import SimRoute, reduce_name
from kpt.collectives._work import finished, wait_library

_AVG = dist.ReduceOp.AVG


def vendor_groups(kinds: list[str]) -> list[list[int]]:
    """The ranks of each device kind, in the order kinds first appear."""
    groups: dict[str, list[int]] = {}
    for rank, kind in enumerate(kinds):
        groups.setdefault(kind, []).append(rank)
    return list(groups.values())


def hierarchical_applies(kinds: list[str]) -> bool:
    """Several vendor groups, all of one size of at least two (the plan's shape)."""
    groups = vendor_groups(kinds)
    return len(groups) > 1 and len({len(g) for g in groups}) == 1 and len(groups[0]) > 1


def prefers_hierarchical(kinds: list[str], names: list[str | None], nbytes: int) -> bool:
    """Whether the cost model ranks the hierarchical plan first for `nbytes` per rank, the
    ranks grouped by route as the backend groups them. A device without a chip profile (None)
    is taken to have its own links faster than the network."""
    if any(name is None for name in names):
        return True
    try:
        ranked = plans(names, nbytes, vendor_groups(kinds))
    except ValueError:  # a profile the cost model cannot load: as unknown
        return True
    return ranked[0].name == "hierarchical"


class HierarchicalAllReduce:
    """One rank's part of the plan; made once per group by its RouteBook."""

    def __init__(self, store: Any, rank: int, kinds: list[str], timeout: datetime.timedelta,
                 group_id: str) -> None:  # fmt: skip
        groups = vendor_groups(kinds)
        self.world = len(kinds)
        self.group_index = next(i for i, g in enumerate(groups) if rank in g)
        members = groups[self.group_index]
        self.local_rank, self.size = members.index(rank), len(members)
        kind = kinds[rank]
        inner = dist.PrefixStore(f"kpt-intra/{self.group_index}/", store)
        if kind.startswith("kpt_sim@"):
            self.intra: Any = SimRoute(f"{group_id}/intra/{self.group_index}", self.local_rank,
                                       self.size, timeout.total_seconds())  # fmt: skip
        elif kind == "cpu":
            self.intra = HostRoute(make_gloo(inner, self.local_rank, self.size, timeout), self.size)
        else:
            self.intra = make_native(kind, inner, self.local_rank, self.size, timeout)
        across = dist.PrefixStore(f"kpt-cross/{self.local_rank}/", store)
        self.cross = make_gloo(across, self.group_index, len(groups), timeout)

    def close(self) -> None:
        if isinstance(self.intra, SimRoute):
            self.intra.close()
        self.cross = None  # its threads end now (HostRoute.close says why)

    def all_reduce(self, tensor: torch.Tensor, op: Any) -> dist.Work:
        reduce_op = dist.ReduceOp.SUM if op == _AVG else op
        n = tensor.numel()
        per_shard = -(-n // self.size)
        with torch.no_grad():
            padded = tensor.new_zeros(per_shard * self.size)
            padded[:n].copy_(tensor.reshape(-1))
            shard = tensor.new_empty(per_shard)
            self._reduce_scatter(shard, padded, reduce_op)
            host = shard.to("cpu")
            options = dist.AllreduceOptions()
            options.reduceOp = reduce_op
            wait_library(self.cross.allreduce([host], options), "cross-group all_reduce")
            shard.copy_(host)
            self._all_gather(padded, shard)
            if op == _AVG:
                divide(padded, self.world)
            tensor.copy_(padded[:n].view_as(tensor))
        return finished([tensor])

    def _reduce_scatter(self, shard: torch.Tensor, whole: torch.Tensor, op: Any) -> None:
        if isinstance(self.intra, SimRoute):
            self.intra.run("reduce_scatter", whole, shard, [shard], op=reduce_name(op)).wait()
        else:
            self.intra.reduce_scatter(shard, whole, op).wait()

    def _all_gather(self, whole: torch.Tensor, shard: torch.Tensor) -> None:
        if isinstance(self.intra, SimRoute):
            self.intra.run("all_gather", shard, whole, [whole]).wait()
        else:
            self.intra.all_gather(whole, shard).wait()
