"""Which route a collective takes, agreed by every rank of the group once.

At a group's first collective each rank declares the device kind of its tensor (cpu, cuda, xpu,
or kpt_sim@<daemon endpoint>) through the group's store. All the same: that kind's own path
(the daemon for kpt_sim, nccl for cuda, xccl for xpu, gloo for cpu), and cpu tensors on gloo.
Different: a mixed group, where every collective is staged through the host. A group whose
first collectives are all on cpu agrees again at its first device collective.
"""

from __future__ import annotations

import datetime
from typing import Any

import torch

from kpt.collectives._errors import CollectiveError, CollectiveTimeoutError
from kpt.collectives._host_route import HostRoute, make_native
from kpt.collectives._sim_route import SimRoute, sim_kind


def device_kind(tensor: torch.Tensor) -> str:
    kind = tensor.device.type
    return sim_kind() if kind == "kpt_sim" else kind


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
        self._epoch = 0
        self._device_route: Any = None

    @property
    def mixed(self) -> bool:
        return self.kinds is not None and len(set(self.kinds)) > 1

    def route(self, tensor: torch.Tensor) -> Any:
        """SimRoute, NativeRoute or HostRoute for a collective on `tensor` (this rank's)."""
        kind = device_kind(tensor)
        if self.kinds is None or (kind != "cpu" and set(self.kinds) == {"cpu"}):
            self._agree(kind)
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
        return self._device_route

    def describe(self) -> str:
        if self.kinds is None:
            return "not agreed yet (at the first collective)"
        if self.mixed:
            return f"mixed {sorted(set(self.kinds))}: staged through the host (gloo)"
        return f"{self.kinds[0]} on every rank: native"

    def close(self) -> None:
        if isinstance(self._device_route, SimRoute):
            self._device_route.close()

    def _agree(self, kind: str) -> None:
        epoch, self._epoch = self._epoch, self._epoch + 1
        self.store.set(f"kpt-kinds/{epoch}/{self.rank}", kind)
        try:
            self.kinds = [
                self.store.get(f"kpt-kinds/{epoch}/{r}").decode() for r in range(self.world)
            ]
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
