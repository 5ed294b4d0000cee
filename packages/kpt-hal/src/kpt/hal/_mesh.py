"""plan_mesh: place ranks on devices, grouped by node and by how fast devices reach each other."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kpt.hal._types import Device


@dataclass(frozen=True)
class MeshPlan:
    """A proposed device mesh: rank r runs on devices[r]; rows of `groups` share a fast link."""

    shape: tuple[int, ...]
    dim_names: tuple[str, ...]
    groups: tuple[tuple[Device, ...], ...]  # one row per node group, in rank order
    link_bandwidth: tuple[float, ...]  # per group: slowest fastest-link inside it, B/s
    notes: tuple[str, ...] = ()

    @property
    def devices(self) -> list[Device]:
        return [device for group in self.groups for device in group]

    @property
    def world_size(self) -> int:
        return sum(len(group) for group in self.groups)

    def device_for_rank(self, rank: int) -> Device:
        if not 0 <= rank < self.world_size:
            raise IndexError(f"rank {rank} outside the mesh of {self.world_size} ranks")
        return self.devices[rank]

    def init_device_mesh(self) -> Any:
        """torch's DeviceMesh for this plan (torch.distributed must be initialized)."""
        from torch.distributed.device_mesh import init_device_mesh

        types = {d.device_type for d in self.devices}
        if len(types) != 1:
            raise ValueError(
                f"plan mixes device types {sorted(types)}; torch's DeviceMesh holds one type, "
                "use kpt.collectives for heterogeneous meshes"
            )
        return init_device_mesh(types.pop(), self.shape, mesh_dim_names=self.dim_names)


def _islands(devices: list[Device]) -> list[list[Device]]:
    """Devices of one node and adapter split into peer-connected islands, fastest first."""
    by_index = {d.index: d for d in devices}
    seen: set[int] = set()
    islands = []
    for device in devices:
        if device.index in seen:
            continue
        island, stack = [], [device.index]
        while stack:
            index = stack.pop()
            if index in seen or index not in by_index:
                continue
            seen.add(index)
            island.append(by_index[index])
            stack.extend(by_index[index].capabilities.interconnect.peers)
        islands.append(sorted(island, key=lambda d: d.index))
    # No device declares peers: treat the node as one island linked through the host.
    if all(not d.capabilities.interconnect.peers for d in devices):
        islands = [sorted(devices, key=lambda d: d.index)]
    islands.sort(key=lambda isl: (-_slowest_link(isl), -len(isl), isl[0].index))
    return islands


def _slowest_link(devices: Sequence[Device]) -> float:
    return min((d.capabilities.interconnect.fastest_link for d in devices), default=0.0)


def _node_score(ordered: list[Device], islands: list[list[Device]], per_node: int) -> tuple:
    chosen = ordered[:per_node]
    one_island = any(set(map(id, chosen)) <= set(map(id, isl)) for isl in islands)
    return (one_island, _slowest_link(chosen))


def plan_mesh(world_size: int, devices: Sequence[Device]) -> MeshPlan:
    """A (nodes, local) mesh of `world_size` ranks over `devices`, or a flat one if uneven.

    Devices are grouped by (node, adapter); inside a group, ranks fill the fastest
    peer-connected island first. The largest per-node count dividing world_size wins.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size={world_size!r} must be a positive int")
    if world_size > len(devices):
        raise ValueError(
            f"world_size={world_size} needs {world_size} devices, only {len(devices)} given "
            "(failed devices are left out; see `kpt devices`)"
        )
    nodes: dict[tuple[str, str], list[Device]] = defaultdict(list)
    for device in devices:
        nodes[(device.capabilities.interconnect.node, device.adapter)].append(device)
    ordered, islands = {}, {}
    for key, members in nodes.items():
        islands[key] = _islands(members)
        ordered[key] = [d for isl in islands[key] for d in isl]
    notes = []
    if len({adapter for _, adapter in nodes}) > 1:
        notes.append("devices of several adapters: each adapter's devices form separate groups")
    for per_node in sorted(
        (d for d in range(1, world_size + 1) if world_size % d == 0), reverse=True
    ):
        needed = world_size // per_node
        eligible = [key for key in nodes if len(nodes[key]) >= per_node]
        if len(eligible) < needed:
            continue
        eligible.sort(
            key=lambda k: (_node_score(ordered[k], islands[k], per_node), k), reverse=True
        )
        groups = tuple(tuple(ordered[key][:per_node]) for key in eligible[:needed])
        for key in eligible[:needed]:
            if not _node_score(ordered[key], islands[key], per_node)[0]:
                notes.append(f"group on {key[0]}/{key[1]} spans islands: its links are slower")
        return MeshPlan(
            shape=(needed, per_node),
            dim_names=("node", "local"),
            groups=groups,
            link_bandwidth=tuple(_slowest_link(g) for g in groups),
            notes=tuple(notes),
        )
    flat = [d for key in sorted(nodes) for d in ordered[key]][:world_size]
    notes.append(
        f"no equal split of {world_size} ranks over nodes holding "
        f"{sorted(len(m) for m in nodes.values())} devices: flat mesh"
    )
    return MeshPlan(
        shape=(world_size,),
        dim_names=("rank",),
        groups=(tuple(flat),),
        link_bandwidth=(_slowest_link(flat),),
        notes=tuple(notes),
    )
