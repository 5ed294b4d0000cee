"""The cost model of a mixed group's collectives, and the plan it picks.

A mixed group has ranks of several vendor groups. Two ways to all-reduce across them:
- flat: every rank copies its tensor to the host, gloo all-reduces across all N hosts (a ring
  over the network), every rank copies back;
- hierarchical (FlagCX's intra / cross / intra, with the split chosen by speeds): reduce-scatter
  inside each vendor group over its own links, copy 1/g of the tensor to the host, all-reduce
  those shards across groups over the network, copy back, all-gather inside each group.
Each step is alpha-beta (latency + bytes / bandwidth), as NCCL's tuning.cc models its
algorithms; rates come from kpt.sim chip profiles when the device is a profile name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

try:  # kpt-sim is torch-free; without it only the built-in device classes are known
    from kpt.sim import load_profile, profiles
except ImportError:  # pragma: no cover
    load_profile = profiles = None  # type: ignore[assignment]


@dataclass(frozen=True)
class DeviceRates:
    """What the cost model needs of one rank's device, in bytes/s and seconds."""

    name: str
    vendor: str
    link_bandwidth: float  # to a same-vendor peer (NVLink, Infinity Fabric, ...)
    link_latency: float
    host_bandwidth: float  # device <-> host copies
    host_latency: float
    network_bandwidth: float  # host <-> host, between vendor groups
    network_latency: float


CPU = DeviceRates("cpu", "cpu", 10e9, 2e-6, 1e12, 0.0, 12.5e9, 10e-6)


def device_rates(name: str) -> DeviceRates:
    """Rates for a kpt.sim profile name (h100-sxm, mi300x, ...) or 'cpu'."""
    if name == "cpu":
        return CPU
    if load_profile is None:
        raise ValueError(f"device {name!r}: install kpt-sim for its profile, or use 'cpu'")
    try:
        p = load_profile(name)
    except Exception as exc:
        raise ValueError(f"device {name!r}: not a chip profile ({exc}); shipped: "
                         f"{', '.join(profiles())}, or 'cpu'") from None  # fmt: skip
    network = min(p.network_bandwidth, CPU.network_bandwidth)  # the hosts' NIC is the bound
    return DeviceRates(p.name, p.vendor, p.chip_link_bandwidth * p.chip_link_count,
                       p.chip_link_latency_s, p.host_link_bandwidth, p.host_link_latency_s,
                       network, max(p.network_latency_s, CPU.network_latency))  # fmt: skip


@dataclass(frozen=True)
class Step:
    what: str
    seconds: float


@dataclass(frozen=True)
class Plan:
    name: str
    steps: tuple[Step, ...]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)


def _ring(n: int, nbytes: float, bandwidth: float, latency: float, passes: int = 2) -> float:
    """Ring all-reduce (passes=2) or reduce-scatter / all-gather (passes=1) over n ranks."""
    if n <= 1:
        return 0.0
    return passes * (n - 1) * (latency + nbytes / n / bandwidth)


def plans(
    devices: Sequence[str], nbytes: int, groups: Sequence[Sequence[int]] | None = None
) -> list[Plan]:
    """Every candidate plan for an all-reduce of `nbytes` per rank, cheapest first.

    groups: the ranks (indices into devices) that share a route, when not the vendors (the
    backend groups by route: every kpt_sim rank of one daemon is one group, whatever chips)."""
    rates = [device_rates(d) for d in devices]
    n = len(rates)
    by_vendor: dict[str, list[DeviceRates]] = {}
    for r in rates:
        by_vendor.setdefault(r.vendor, []).append(r)
    members = (list(by_vendor.values()) if groups is None
               else [[rates[i] for i in g] for g in groups])  # fmt: skip
    host_bw = min(r.host_bandwidth for r in rates)
    host_lat = max(r.host_latency for r in rates)
    net_bw = min(r.network_bandwidth for r in rates)
    net_lat = max(r.network_latency for r in rates)
    copy = host_lat + nbytes / host_bw
    flat = Plan("flat", (
        Step(f"device -> host: {nbytes} B per rank", copy),
        Step(f"gloo ring all-reduce over {n} hosts", _ring(n, nbytes, net_bw, net_lat)),
        Step(f"host -> device: {nbytes} B per rank", copy),
    ))  # fmt: skip
    candidates = [flat]
    sizes = {len(g) for g in members}
    if len(members) > 1 and len(sizes) == 1 and sizes != {1}:
        g = sizes.pop()
        intra = max(
            _ring(
                g, nbytes, min(r.link_bandwidth for r in grp), max(r.link_latency for r in grp), 1
            )
            for grp in members
        )
        shard = nbytes / g
        shard_copy = host_lat + shard / host_bw
        candidates.append(Plan("hierarchical", (
            Step(f"reduce-scatter inside each of {len(members)} vendor groups ({g} ranks)", intra),
            Step(f"device -> host: {shard:.0f} B shard per rank", shard_copy),
            Step(f"gloo all-reduce of each shard across {len(members)} groups",
                 _ring(len(members), shard, net_bw, net_lat)),
            Step(f"host -> device: {shard:.0f} B shard per rank", shard_copy),
            Step("all-gather inside each vendor group", intra),
        )))  # fmt: skip
    elif len(members) == 1 and n > 1:
        (grp,) = members
        native = _ring(n, nbytes, min(r.link_bandwidth for r in grp),
                       max(r.link_latency for r in grp))  # fmt: skip
        candidates.append(Plan("native", (Step(f"{grp[0].vendor} ring all-reduce", native),)))
    return sorted(candidates, key=lambda p: p.seconds)


def format_plans(devices: Sequence[str], nbytes: int) -> str:
    """The plan table `kpt-collectives plan` prints, cheapest first; the backend runs the first
    (a mixed group's all_reduce: flat or hierarchical, _hierarchy.py)."""
    ranked = plans(devices, nbytes)
    lines = [f"all_reduce of {nbytes} bytes over {len(devices)} ranks: {', '.join(devices)}"]
    for plan in ranked:
        mark = "runs  " if plan is ranked[0] else "      "
        lines.append(f"{mark} {plan.name:<13} {plan.seconds * 1e3:10.3f} ms")
        for step in plan.steps:
            lines.append(f"         {step.seconds * 1e3:10.3f} ms  {step.what}")
    return "\n".join(lines)
