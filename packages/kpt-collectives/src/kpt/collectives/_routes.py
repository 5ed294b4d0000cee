"""Which route a collective takes, agreed by every rank of the group once.

At a group's first collective each rank declares the device kind of its tensor (cpu, cuda, xpu,
or kpt_sim@<daemon endpoint>) through the group's store. All the same: that kind's own path
(the daemon for kpt_sim, nccl for cuda, xccl for xpu, gloo for cpu), and cpu tensors on gloo.
Different: a mixed group, where every collective is staged through the host, except an
all_reduce that the cost model sends down the hierarchical plan (_hierarchy.py): for that each
rank also declares its chip profile. A group whose first collectives are all on cpu agrees
again at its first device collective.
"""

from __future__ import annotations

import datetime
from typing import Any

import torch

from kpt.collectives._errors import CollectiveError, CollectiveTimeoutError
from kpt.collectives._hierarchy import (
    HierarchicalAllReduce,
    hierarchical_applies,
    prefers_hierarchical,
)
from kpt.collectives._host_route import HostRoute, NativeRoute, make_native
from kpt.collectives._sim_route import SimRoute, sim_kind


def device_kind(tensor: torch.Tensor) -> str:
    kind = tensor.device.type
    return sim_kind() if kind == "kpt_sim" else kind


def device_profile(tensor: torch.Tensor) -> str:
    """The chip profile the cost model knows the tensor's device by ("" when none does)."""
    if tensor.device.type == "cpu":
        return "cpu"
    if tensor.device.type == "kpt_sim":
        properties = torch.kpt_sim.get_device_properties(tensor.device.index or 0)
        return str(getattr(properties, "profile", "") or "")
    return ""


class RouteBook:
    """The agreed routes of one group: created with it, asked before every collective."""

    def __init__(
        self, store: Any, rank: int, world: int, timeout: datetime.timedelta, group_id: str,
        host: HostRoute,
    ) -> None:  # fmt: skip
        self.store, self.rank, self.world, self.timeout = store, rank, world, timeout
        self.group_id = group_id
        self.host = host
        self.kinds: list[str] | None = None  # every rank's declared kind, once agreed
        self.profiles: list[str | None] = []  # every rank's chip profile (None: unknown)
        # A mixed group whose all_reduce may take the hierarchical plan (set on agreement).
        self.may_split = False
        self._hierarchy: HierarchicalAllReduce | None = None
        self._prefers: dict[int, bool] = {}  # bytes per rank -> hierarchical ranked first
        self._epoch = 0
        self._device_route: Any = None
        # (device type, route) once a device route is agreed: the hot path's answer without
        # working the kind out again (a kpt_sim kind names the daemon's endpoint).
        self._settled: tuple[str, Any] | None = None

    @property
    def mixed(self) -> bool:
        return self.kinds is not None and len(set(self.kinds)) > 1

    def hierarchy(self, tensor: torch.Tensor) -> HierarchicalAllReduce | None:
        """The hierarchical plan for an all_reduce of `tensor` when it applies and the cost
        model ranks it first (the same answer on every rank: agreed kinds and profiles, and
        the same size everywhere), else None. Ask after route(), which agrees on kinds."""
        if not self.may_split:
            return None
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes not in self._prefers:
            self._prefers[nbytes] = prefers_hierarchical(self.kinds, self.profiles, nbytes)
        if not self._prefers[nbytes]:
            return None
        if self._hierarchy is None:
            self._hierarchy = HierarchicalAllReduce(self.store, self.rank, self.kinds,
                                                    self.timeout, self.group_id)  # fmt: skip
        return self._hierarchy

    def route(self, tensor: torch.Tensor) -> Any:
        """SimRoute, NativeRoute or HostRoute for a collective on `tensor` (this rank's)."""
        settled = self._settled
        if settled is not None and tensor.device.type == settled[0]:
            return settled[1]
        kind = device_kind(tensor)
        if self.kinds is None or (kind != "cpu" and set(self.kinds) == {"cpu"}):
            self._agree(kind, device_profile(tensor))
        if self.mixed or kind == "cpu":
            return self.host
        if kind != self.kinds[self.rank]:
            raise CollectiveError(
                f"rank {self.rank} called a collective on {kind} tensors, but the group agreed "
                f"on {self.kinds[self.rank]} at its first device collective; keep each rank's "
                "collectives on one device kind (or on cpu)"
            )
        if self._device_route is None:
            self._device_route = self._make_device_route(kind)
        self._settled = (tensor.device.type, self._device_route)
        return self._device_route

    def describe(self) -> str:
        if self.kinds is None:
            return "not agreed yet (at the first collective)"
        if self.mixed:
            split = "; all_reduce by the hierarchical plan where the cost model ranks it first"
            return (f"mixed {sorted(set(self.kinds))}: staged through the host (gloo)"
                    f"{split if self.may_split else ''}")  # fmt: skip
        return f"{self.kinds[0]} on every rank: native"

    def settle(self) -> None:
        """Wait until this process's kpt_sim collectives ran (what a barrier's device
        synchronize does with NCCL); raises the first failure."""
        if isinstance(self._device_route, SimRoute):
            self._device_route.settle()

    def close(self) -> None:
        if isinstance(self._device_route, (SimRoute, NativeRoute)):
            self._device_route.close()
        if self._hierarchy is not None:
            self._hierarchy.close()
        self.host.close()

    def _agree(self, kind: str, profile: str) -> None:
        epoch, self._epoch = self._epoch, self._epoch + 1
        self.store.set(f"kpt-kinds/{epoch}/{self.rank}", f"{kind}\n{profile}")
        try:
            declared = [
                self.store.get(f"kpt-kinds/{epoch}/{r}").decode().split("\n", 1)
                for r in range(self.world)
            ]
            self.kinds = [k for k, _ in declared]
            self.profiles = [p or None for _, p in declared]
            self.may_split = self.mixed and hierarchical_applies(self.kinds)
        except Exception as exc:  # the store's timeout: name who never declared
            missing = [r for r in range(self.world)
                       if not self.store.check([f"kpt-kinds/{epoch}/{r}"])]  # fmt: skip
            raise CollectiveTimeoutError(
                f"group {self.group_id!r}: ranks {missing} never reached the group's first "
                f"collective within {self.timeout.total_seconds():g} s (rank {self.rank} did); "
                "they are slow, hung or dead, or called a different collective"
            ) from exc

    def _make_device_route(self, kind: str) -> Any:
        seconds = self.timeout.total_seconds()
        if kind.startswith("kpt_sim@"):
            return SimRoute(self.group_id, self.rank, self.world, seconds)
        return make_native(kind, self.store, self.rank, self.world, self.timeout)
