"""Interconnect: directed links with latency and bandwidth, and routes between devices.

Links are reservation timelines: a transfer occupies every link on its route for
bytes / bandwidth, so concurrent transfers on one link queue behind each other (FIFO).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from kpt.sim._errors import InvalidRequestError
from kpt.sim._profiles import Profile

TOPOLOGIES = ("switch", "ring", "torus2d")


class Links:
    """All directed links of a cluster, as arrays the collective engine can vectorize over."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._bandwidth: list[float] = []
        self._latency: list[float] = []

    def add(self, name: str, bandwidth: float, latency: float) -> int:
        self.names.append(name)
        self._bandwidth.append(bandwidth)
        self._latency.append(latency)
        return len(self.names) - 1

    def freeze(self) -> None:
        # One extra "null" link pads routes of different lengths: infinitely fast, never busy.
        self.null = len(self.names)
        self.bandwidth = np.array([*self._bandwidth, math.inf])
        self.latency = np.array([*self._latency, 0.0])
        self.reset()

    def reset(self) -> None:
        self.free_at = np.zeros(self.null + 1)
        self.free_at[self.null] = -math.inf
        self.busy = np.zeros(self.null + 1)  # total seconds each link carried data
        self.scale = np.ones(self.null + 1)  # bandwidth factor (1: healthy, <1: degraded)
        self.down_at = np.full(self.null + 1, math.inf)  # sim time a link goes down
        self.up_at = np.full(self.null + 1, math.inf)  # sim time a down link recovers

    def __len__(self) -> int:
        return self.null


class Topology:
    """Devices joined by links: intra-node switch, ring or 2D torus; nodes joined by a network."""

    def __init__(self, profiles: Sequence[Profile], kind: str = "switch", nodes: int = 1) -> None:
        n = len(profiles)
        if kind not in TOPOLOGIES:
            raise InvalidRequestError(
                f"topology {kind!r} unknown; use one of {', '.join(TOPOLOGIES)}"
            )
        if nodes < 1 or n % nodes:
            raise InvalidRequestError(
                f"{n} devices cannot be split into {nodes} nodes evenly; "
                "use a device count that is a multiple of the node count"
            )
        self.kind, self.nodes, self.devices = kind, nodes, n
        self.per_node = n // nodes
        self.profiles = list(profiles)
        self.links = Links()
        self._routes: dict[tuple[int, int], tuple[int, ...]] = {}
        self._neighbors: dict[tuple[int, int], int] = {}  # (a, b) -> link for adjacent devices
        self._switch_up: dict[int, int] = {}
        self._switch_down: dict[int, int] = {}
        for node in range(nodes):
            local = list(range(node * self.per_node, (node + 1) * self.per_node))
            getattr(self, f"_build_{kind}")(local)
        self._nic_up: list[int] = []
        self._nic_down: list[int] = []
        if nodes > 1:
            # Rail-optimized, non-blocking fabric: one NIC per device, up to and down from it.
            for d, p in enumerate(self.profiles):
                self._nic_up.append(
                    self.links.add(f"net d{d}->", p.network_bandwidth, p.network_latency_s / 2)
                )
                self._nic_down.append(
                    self.links.add(f"net ->d{d}", p.network_bandwidth, p.network_latency_s / 2)
                )
        self.links.freeze()

    # --- builders -------------------------------------------------------------------------
    def _build_switch(self, local: list[int]) -> None:
        # Each device's chip links all go to one switch: an uplink and a downlink carrying
        # count x per-link bandwidth; the switch hop costs one link latency each way.
        for d in local:
            p = self.profiles[d]
            bw, lat = p.chip_link_count * p.chip_link_bandwidth, p.chip_link_latency_s / 2
            self._switch_up[d] = self.links.add(f"d{d}->switch", bw, lat)
            self._switch_down[d] = self.links.add(f"switch->d{d}", bw, lat)

    def _pair_link(self, a: int, b: int, share: int) -> None:
        pa, pb = self.profiles[a], self.profiles[b]
        bw = (
            min(
                pa.chip_link_count * pa.chip_link_bandwidth,
                pb.chip_link_count * pb.chip_link_bandwidth,
            )
            / share
        )
        lat = max(pa.chip_link_latency_s, pb.chip_link_latency_s)
        if (a, b) not in self._neighbors:
            self._neighbors[(a, b)] = self.links.add(f"d{a}->d{b}", bw, lat)

    def _build_ring(self, local: list[int]) -> None:
        g = len(local)
        for i in range(g if g > 2 else g - 1):
            a, b = local[i], local[(i + 1) % g]
            self._pair_link(a, b, 2)
            self._pair_link(b, a, 2)

    def _torus_shape(self, g: int) -> tuple[int, int]:
        rows = math.isqrt(g)
        while g % rows:
            rows -= 1
        return rows, g // rows

    def _build_torus2d(self, local: list[int]) -> None:
        rows, cols = self._torus_shape(len(local))
        for r in range(rows):
            for c in range(cols):
                a = local[r * cols + c]
                for b in (local[r * cols + (c + 1) % cols], local[((r + 1) % rows) * cols + c]):
                    if a != b:
                        self._pair_link(a, b, 4)
                        self._pair_link(b, a, 4)

    # --- routing --------------------------------------------------------------------------
    def node_of(self, device: int) -> int:
        return device // self.per_node

    def route(self, src: int, dst: int) -> tuple[int, ...]:
        """Link ids a transfer from src to dst crosses, in order."""
        key = (src, dst)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = self._compute_route(src, dst)
        return found

    def _compute_route(self, src: int, dst: int) -> tuple[int, ...]:
        for d in (src, dst):
            if not 0 <= d < self.devices:
                raise InvalidRequestError(
                    f"device {d} does not exist; devices are 0..{self.devices - 1}"
                )
        if src == dst:
            return ()
        if self.node_of(src) != self.node_of(dst):
            return (self._nic_up[src], self._nic_down[dst])
        if self.kind == "switch":
            return (self._switch_up[src], self._switch_down[dst])
        base = self.node_of(src) * self.per_node
        a, b = src - base, dst - base
        if self.kind == "ring":
            hops = self._ring_hops(a, b, self.per_node)
            return self._walk(base, [a, *hops])
        rows, cols = self._torus_shape(self.per_node)
        (ra, ca), (rb, cb) = divmod(a, cols), divmod(b, cols)
        path = [a]
        for c in self._ring_hops(ca, cb, cols):  # x first, then y (dimension-order routing)
            path.append(ra * cols + c)
        for r in self._ring_hops(ra, rb, rows):
            path.append(r * cols + cb)
        return self._walk(base, path)

    @staticmethod
    def _ring_hops(a: int, b: int, size: int) -> list[int]:
        forward = (b - a) % size
        step = 1 if forward <= size - forward else -1
        hops, at = [], a
        while at != b:
            at = (at + step) % size
            hops.append(at)
        return hops

    def _walk(self, base: int, local_path: list[int]) -> tuple[int, ...]:
        return tuple(
            self._neighbors[(base + x, base + y)] for x, y in itertools.pairwise(local_path)
        )

    def path_cost(self, src: int, dst: int) -> tuple[float, float]:
        """(latency, bottleneck bandwidth) of the route: the alpha and beta of alpha-beta."""
        route = self.route(src, dst)
        if not route:
            return 0.0, math.inf
        ids = list(route)
        return float(self.links.latency[ids].sum()), float(self.links.bandwidth[ids].min())
