"""Collective plans: ring, tree, hierarchical, pairwise; their closed forms; the choice.

A plan is a list of steps; a step is a set of concurrent point-to-point transfers, as arrays
of rank positions (kpt.sim._collective_run runs them as a simpy process over the links). The
reduction is fused into the receive (as NCCL does); it only costs time when HBM is slower
than the link.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from kpt.sim._collective_run import CollectiveRun
from kpt.sim._errors import InvalidRequestError

if TYPE_CHECKING:
    from kpt.sim._simulator import Simulator

KINDS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all", "send_recv")
ALGORITHMS = {
    "all_reduce": ("ring", "tree", "hierarchical"),
    "all_gather": ("ring",),
    "reduce_scatter": ("ring",),
    "broadcast": ("tree", "ring"),
    "all_to_all": ("pairwise",),
    "send_recv": ("direct",),
}
MAX_PIPELINE_CHUNKS = 256


class CollectiveResult:
    """What a collective was planned as (at once) and how it ran (once simulated).

    kind, algorithm, devices, nbytes, predicted (the chosen plan's closed form) and estimates
    (per candidate) are known when it is issued. start, end, duration, steps and transfers
    come from the simulation: reading one waits for the collective, as a host would (the
    simulator runs until it has finished; end is inf if a rank hung).
    """

    def __init__(self, kind, algorithm, devices, nbytes, predicted, estimates, wait) -> None:
        self.kind: str = kind
        self.algorithm: str = algorithm
        self.devices: list[int] = devices
        self.nbytes: int = nbytes
        self.predicted: float = predicted
        self.estimates: dict[str, float] = estimates
        self._wait = wait  # runs the simulation until this collective has finished
        self._ran: tuple[float, float, int, int, float] | None = None

    def _resolved(self, start: float, end: float, steps: int, transfers: int, last: float) -> None:
        self._ran = (start, end, steps, transfers, last)

    def _get(self, i: int):
        if self._ran is None:
            self._wait(self)
        if self._ran is None:  # never finished: a rank hung
            return (math.inf, math.inf, 0, 0, math.inf)[i]
        return self._ran[i]

    start = property(lambda self: self._get(0), doc="sim seconds: earliest rank's arrival")
    end = property(lambda self: self._get(1), doc="sim seconds: when the last rank finished")
    steps = property(lambda self: self._get(2))
    transfers = property(lambda self: self._get(3))
    last_arrival = property(lambda self: self._get(4), doc="sim seconds: the last rank's arrival")

    @property
    def duration(self) -> float:
        """From the first rank's arrival: a straggler's lateness is in it, as in a rank's view."""
        return self.end - self.start

    @property
    def transfer_time(self) -> float:
        """From the last rank's arrival: the algorithm's own time, which `predicted` forecasts."""
        return self.end - self.last_arrival

    def __repr__(self) -> str:
        ran = "pending" if self._ran is None else f"{self.start:.9g}-{self.end:.9g} s"
        return (f"CollectiveResult({self.kind}, {self.algorithm}, devices={self.devices}, "
                f"nbytes={self.nbytes}, predicted={self.predicted:.9g} s, {ran})")  # fmt: skip


# --- one step = (key, src positions, dst positions, bytes per transfer, reduces?) ------------
Step = tuple[object, np.ndarray, np.ndarray, float, bool]


def _ring_steps(n: int, chunk: float, count: int, reduce_first: int, key="ring") -> Iterator[Step]:
    src = np.arange(n)
    dst = np.roll(src, -1)
    for s in range(count):
        yield (key, src, dst, chunk, s < reduce_first)


def _binomial_levels(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(children, parents) per level of a binomial tree rooted at position 0, leaves first."""
    levels = []
    for k in range(math.ceil(math.log2(n)) if n > 1 else 0):
        span = 1 << k
        children = np.arange(span, n, 2 * span)
        levels.append((children, children - span))
    return levels


def _tree_reduce(n: int, nbytes: float) -> Iterator[Step]:
    for k, (children, parents) in enumerate(_binomial_levels(n)):
        yield (("tree-up", k), children, parents, nbytes, True)


def _tree_broadcast(n: int, nbytes: float) -> Iterator[Step]:
    for k, (children, parents) in reversed(list(enumerate(_binomial_levels(n)))):
        yield (("tree-down", k), parents, children, nbytes, False)


def _chain_broadcast(n: int, nbytes: float, chunks: int) -> Iterator[Step]:
    """Pipelined chain 0 -> 1 -> ... -> n-1 in `chunks` pieces."""
    for s in range(n - 2 + chunks):
        lo, hi = max(0, s - chunks + 1), min(s, n - 2)
        src = np.arange(lo, hi + 1)
        yield (("chain", lo, hi), src, src + 1, nbytes / chunks, False)


def _pairwise(n: int, per_peer: float) -> Iterator[Step]:
    src = np.arange(n)
    for j in range(1, n):
        yield (("shift", j), src, (src + j) % n, per_peer, False)


def _hierarchical(groups: int, per_group: int, nbytes: float) -> Iterator[Step]:
    """Reduce-scatter in each node, all-reduce across nodes per local rank, all-gather in nodes."""
    g, nodes = per_group, groups
    pos = np.arange(g * nodes).reshape(nodes, g)
    intra_src, intra_dst = pos.ravel(), np.roll(pos, -1, axis=1).ravel()
    inter_src, inter_dst = pos.T.ravel(), np.roll(pos, -1, axis=0).T.ravel()
    for _ in range(g - 1):
        yield ("intra", intra_src, intra_dst, nbytes / g, True)
    for s in range(2 * (nodes - 1)):
        yield ("inter", inter_src, inter_dst, nbytes / g / nodes, s < nodes - 1)
    for _ in range(g - 1):
        yield ("intra", intra_src, intra_dst, nbytes / g, False)


# --- closed forms ------------------------------------------------------------------------------
def _reduce_extra(nbytes: float, beta: float, hbm: float) -> float:
    """Time a fused reduction of nbytes adds to its receive: 3 HBM bytes per byte, overlapped."""
    return max(0.0, 3 * nbytes / hbm - nbytes / beta)


def ring_all_reduce_time(
    n: int, nbytes: float, alpha: float, beta: float, hbm: float = math.inf
) -> float:
    """Alpha-beta ring all-reduce: 2(n-1) steps of nbytes/n (n-1 of them also reduce)."""
    if n <= 1:
        return 0.0
    chunk = nbytes / n
    return 2 * (n - 1) * (alpha + chunk / beta) + (n - 1) * _reduce_extra(chunk, beta, hbm)


def tree_all_reduce_time(
    n: int, nbytes: float, alpha: float, beta: float, hbm: float = math.inf
) -> float:
    """Binomial-tree reduce then broadcast: 2 ceil(log2 n) steps of nbytes."""
    if n <= 1:
        return 0.0
    levels = math.ceil(math.log2(n))
    return 2 * levels * (alpha + nbytes / beta) + levels * _reduce_extra(nbytes, beta, hbm)


PIPELINE_CHUNK_BYTES = 512 * 1024


def _chain_chunks(n: int, nbytes: float) -> int:
    """Pieces a chain broadcast pipelines: 512 KiB each, at most MAX_PIPELINE_CHUNKS."""
    return int(min(MAX_PIPELINE_CHUNKS, max(1, math.ceil(nbytes / PIPELINE_CHUNK_BYTES))))


def closed_form(
    kind: str,
    algorithm: str,
    n: int,
    nbytes: float,
    alpha: float,
    beta: float,
    hbm: float = math.inf,
    **kw,
) -> float:
    """Alpha-beta prediction for a plan; alpha, beta: the bottleneck hop's latency and
    bandwidth; hbm: the slowest participant's HBM bandwidth (for fused reductions)."""
    if n <= 1:
        return 0.0
    if kind == "all_reduce" and algorithm == "ring":
        return ring_all_reduce_time(n, nbytes, alpha, beta, hbm)
    if kind == "all_reduce" and algorithm == "tree":
        return tree_all_reduce_time(n, nbytes, alpha, beta, hbm)
    if kind == "all_reduce" and algorithm == "hierarchical":
        g, nodes = kw["per_group"], kw["groups"]
        a_in, b_in, a_out, b_out = kw["intra"][0], kw["intra"][1], alpha, beta
        intra = (g - 1) * (a_in + nbytes / g / b_in) if g > 1 else 0.0
        reduce = (g - 1) * _reduce_extra(nbytes / g, b_in, hbm)
        return 2 * intra + reduce + ring_all_reduce_time(nodes, nbytes / g, a_out, b_out, hbm)
    if kind == "reduce_scatter":
        return (n - 1) * (alpha + nbytes / n / beta + _reduce_extra(nbytes / n, beta, hbm))
    if kind in ("all_gather", "all_to_all"):
        return (n - 1) * (alpha + nbytes / n / beta)
    if kind == "broadcast" and algorithm == "tree":
        return math.ceil(math.log2(n)) * (alpha + nbytes / beta)
    if kind == "broadcast" and algorithm == "ring":
        k = _chain_chunks(n, nbytes)  # latency overlaps: links are busy only bytes / beta
        return (n - 1) * alpha + (n - 2 + k) * nbytes / k / beta
    if kind == "send_recv":
        return alpha + nbytes / beta
    raise InvalidRequestError(f"no closed form for {kind} with {algorithm}")


# --- planning ----------------------------------------------------------------------------------
def _alpha_beta(sim: Simulator, pairs: Sequence[tuple[int, int]]) -> tuple[float, float]:
    alpha, beta = 0.0, math.inf
    for a, b in pairs:
        lat, bw = sim.topology.path_cost(a, b)
        alpha, beta = max(alpha, lat), min(beta, bw)
    return alpha, beta


def _groups(sim: Simulator, devices: list[int]) -> tuple[int, int] | None:
    """(nodes, per node) if the participants span several nodes evenly, in node order."""
    nodes = [sim.topology.node_of(d) for d in devices]
    if len(set(nodes)) < 2 or nodes != sorted(nodes):
        return None
    counts = {nodes.count(x) for x in set(nodes)}
    return (len(set(nodes)), counts.pop()) if len(counts) == 1 else None


def _plan(sim, kind, algorithm, devices, nbytes):
    n = len(devices)
    ring = list(zip(devices, devices[1:] + devices[:1]))
    hbm = min(sim.devices[d].profile.hbm_bandwidth for d in devices)
    estimates: dict[str, float] = {}
    alpha_beta: dict[str, tuple[float, float]] = {}
    extra = {}
    for candidate in ALGORITHMS[kind]:
        if candidate == "hierarchical":
            grouping = _groups(sim, devices)
            if grouping is None:
                continue
            nodes, g = grouping
            intra = [(devices[i], devices[i + 1]) for i in range(n - 1) if (i + 1) % g]
            inter = [(devices[i], devices[i + g]) for i in range(n - g)]
            extra = {"groups": nodes, "per_group": g, "intra": _alpha_beta(sim, intra or ring)}
            pairs = inter
        elif candidate == "tree":
            levels = _binomial_levels(n)
            pairs = [(devices[p], devices[c]) for cs, ps in levels for c, p in zip(cs, ps)]
        elif candidate == "pairwise":
            pairs = [(a, b) for a in devices for b in devices if a != b]
        elif kind == "broadcast":  # a chain, not a closed ring
            pairs = ring[:-1]
        else:
            pairs = ring
        alpha_beta[candidate] = _alpha_beta(sim, pairs)
        estimates[candidate] = closed_form(
            kind, candidate, n, nbytes, *alpha_beta[candidate], hbm, **extra
        )
    if algorithm is None:
        algorithm = min(estimates, key=estimates.get)
    elif algorithm not in ALGORITHMS[kind]:
        raise InvalidRequestError(
            f"algorithm {algorithm!r} does not exist for {kind}; "
            f"use one of {list(ALGORITHMS[kind])}"
        )
    elif algorithm not in estimates:
        raise InvalidRequestError(
            f"algorithm {algorithm!r} needs the devices to span several nodes evenly, in order"
        )
    if algorithm == "ring" and kind == "all_reduce":
        steps = _ring_steps(n, nbytes / n, 2 * (n - 1), n - 1)
    elif algorithm == "ring" and kind in ("all_gather", "reduce_scatter"):
        steps = _ring_steps(n, nbytes / n, n - 1, n - 1 if kind == "reduce_scatter" else 0)
    elif algorithm == "tree" and kind == "all_reduce":
        steps = _chain(_tree_reduce(n, nbytes), _tree_broadcast(n, nbytes))
    elif algorithm == "tree":
        steps = _tree_broadcast(n, nbytes)
    elif algorithm == "ring":  # broadcast
        steps = _chain_broadcast(n, nbytes, _chain_chunks(n, nbytes))
    elif algorithm == "hierarchical":
        steps = _hierarchical(extra["groups"], extra["per_group"], nbytes)
    elif algorithm == "pairwise":
        steps = _pairwise(n, nbytes / n)
    else:  # send_recv
        steps = iter([(("pair",), np.array([0]), np.array([1]), float(nbytes), False)])
    return algorithm, estimates, steps


def _chain(*iterators):
    for it in iterators:
        yield from it


# --- execution ---------------------------------------------------------------------------------
def run_collective(
    sim: Simulator,
    kind: str,
    nbytes: int,
    devices: Sequence[int] | None = None,
    algorithm: str | None = None,
    stream: int = 0,
    root: int | None = None,
    src: int | None = None,
    dst: int | None = None,
) -> CollectiveResult:
    """Issue a collective over `devices` (default: all) on each rank's `stream`. nbytes: the
    buffer each rank holds (all_gather: the gathered output; all_to_all: what each rank
    sends in all). It runs as a simpy process (kpt.sim._collective_run)."""
    if kind not in KINDS:
        raise InvalidRequestError(f"collective {kind!r} unknown; use one of {', '.join(KINDS)}")
    if kind == "send_recv":
        if src is None or dst is None:
            raise InvalidRequestError("send_recv needs src= and dst= devices")
        devices = [src, dst]
    devices = list(range(len(sim.devices))) if devices is None else [int(d) for d in devices]
    for d in devices:
        sim._device(d)
    if len(set(devices)) != len(devices):
        raise InvalidRequestError(f"devices {devices} repeat a device; list each once")
    if not isinstance(nbytes, int | float) or nbytes < 0:
        raise InvalidRequestError(f"nbytes={nbytes!r} must be a non-negative number")
    if kind == "broadcast" and root is not None:
        if root not in devices:
            raise InvalidRequestError(f"root {root} is not among the devices {devices}")
        at = devices.index(root)
        devices = devices[at:] + devices[:at]
    algorithm, estimates, steps = _plan(sim, kind, algorithm, devices, float(nbytes))
    predicted = estimates.get(algorithm, 0.0)
    result = CollectiveResult(
        kind, algorithm, devices, int(nbytes), predicted, estimates, sim._wait_collective
    )
    sim._issue_collective(CollectiveRun(sim, result, steps, stream))
    return result
