"""A collective as a simpy process over the cluster's links (plans: kpt.sim._collectives).

Each rank's stream reaches the collective (a RANK op) and signals its arrival; the process
waits for every rank, so a straggler's late arrival delays them all. A rank whose device was
lost fails every waiting rank with an error that names it. Then the plan runs:

- on links nothing else uses (and no link fault anywhere), in closed form, vectorized over
  ranks with numpy: each transfer starts when its sender has the data and its links are free
  (exact for an uncontended fabric; a 1,024-chip ring is a few thousand array operations). A
  straggling rank sends at 1/factor of its links' bandwidth. The links are counted as shared
  in the Fabric meanwhile, so other traffic sees them busy; each rank resumes at its own end.
- otherwise step by step as Fabric flows, so other traffic on the same links and degraded
  links slow it, and a link that is down fails it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from kpt.sim._errors import DeviceLostError, SimError

if TYPE_CHECKING:
    from kpt.sim._collectives import CollectiveResult
    from kpt.sim._simulator import Simulator


class CollectiveRun:
    """One collective in flight: arrival and completion events per rank, and its result."""

    def __init__(self, sim: Simulator, result: CollectiveResult, steps, stream: int) -> None:
        env = sim.env
        self.sim = sim
        self.result = result
        self.steps = steps
        self.stream = stream
        n = len(result.devices)
        self.arrivals = [env.event() for _ in range(n)]
        self.rank_done = [env.event() for _ in range(n)]
        self.finished = env.event()
        self.known_error = False  # reported at issue already (a device lost before it began)

    def process(self):
        sim, env, result = self.sim, self.sim.env, self.result
        yield env.all_of(self.arrivals)
        arrived = np.array([float(ev.value) for ev in self.arrivals])
        devs = [sim.devices[d] for d in result.devices]
        lost = [pos for pos, d in enumerate(devs) if d.lost_at <= env.now]
        if lost:
            self._fail(self._lost_error(lost, devs), devs)
            for done in self.rank_done:
                done.succeed()
            ends, n_steps, n_transfers = np.full(len(devs), env.now), 0, 0
        else:
            steps = list(self.steps)
            paths = _step_paths(sim, result.devices, steps)
            channels = sorted({int(c) for p, _, _ in paths.values() for c in p.ravel()} - {
                sim.links.null})  # fmt: skip
            if sim._link_faults or not sim.fabric.idle(channels):
                ends = yield from self._by_flows(steps, paths, devs, arrived)
            else:
                ends = yield from self._closed_form(steps, paths, devs, arrived, channels)
            n_steps = len(steps)
            n_transfers = sum(len(s[1]) for s in steps)
        result._resolved(float(arrived.min()), float(np.max(ends)), n_steps, n_transfers,
                         float(arrived.max()))  # fmt: skip
        if sim.trace.enabled:
            name = f"{result.kind} ({result.algorithm})"
            for pos, d in enumerate(devs):
                sim.trace.add(d.index, f"stream {self.stream}", name, float(arrived[pos]),
                              float(ends[pos]))  # fmt: skip
        self.finished.succeed()

    # --- closed form ----------------------------------------------------------------------
    def _closed_form(self, steps, paths, devs, arrived, channels):
        sim, env = self.sim, self.sim.env
        links = sim.links
        t = arrived.copy()
        free = np.full(len(links.bandwidth), -math.inf)
        first = np.full(len(free), math.inf)
        last = np.zeros(len(free))
        hbm = min(d.profile.hbm_bandwidth for d in devs)
        factor = np.array([d.slowdown(float(t.min())) for d in devs])
        null = links.null
        for key, src, dst, nbytes, reduce in steps:
            route, latency, clash = paths[key]
            occupied = nbytes / links.bandwidth[route] * factor[src][:, None]
            bottleneck = occupied.max(axis=1)
            reduce_extra = np.maximum(0.0, 3 * nbytes / hbm - bottleneck) if reduce else 0.0
            if clash:
                start = np.empty(len(src))
                for i in range(len(src)):  # transfers share a link: they queue in order
                    row = route[i]
                    start[i] = max(t[src[i]], free[row].max())
                    free[row] = start[i] + occupied[i]
                    free[null] = -math.inf
            else:
                start = np.maximum(t[src], free[route].max(axis=1))
                free[route] = start[:, None] + occupied
                free[null] = -math.inf
            end = start + latency + bottleneck + reduce_extra
            np.minimum.at(first, route.ravel(), np.repeat(start, route.shape[1]))
            np.maximum.at(last, route.ravel(), np.repeat(end, route.shape[1]))
            links.busy[route] += occupied
            t[dst] = np.maximum(t[dst], end)
        if any(d.hang_at < t.max() for d in devs):
            yield env.event()  # a rank hung mid-collective: every rank waits on it forever
        sim.fabric.hold(channels, +1)
        for pos in np.argsort(t, kind="stable"):
            if t[pos] > env.now:
                yield env.timeout(float(t[pos]) - env.now)
            self.rank_done[pos].succeed()
        sim.fabric.hold(channels, -1)
        if sim.trace.enabled:
            name = f"{self.result.kind} ({self.result.algorithm})"
            for i in np.nonzero(first < math.inf)[0]:
                if i != null:
                    sim.trace.add_link(links.names[i], name, float(first[i]), float(last[i]))
        return t

    # --- step by step over the Fabric -----------------------------------------------------
    def _by_flows(self, steps, paths, devs, arrived):
        sim, env = self.sim, self.sim.env
        links, null = sim.links, sim.links.null
        hbm = min(d.profile.hbm_bandwidth for d in devs)
        factor = [d.slowdown(env.now) for d in devs]
        for key, src, _, nbytes, reduce in steps:
            route, latency, _ = paths[key]
            down = [int(c) for c in route.ravel() if c != null and
                    links.down_at[c] <= env.now < links.up_at[c]]  # fmt: skip
            if down:
                self._fail(sim._link_down_error(down[0], self.result.kind), devs)
                break
            flows = [
                sim.fabric.flow(nbytes * factor[s], [int(c) for c in row if c != null])
                for s, row in zip(src, route)
            ]
            yield env.all_of([f.done for f in flows])
            bottleneck = nbytes / float(np.min(links.bandwidth[route]))
            extra = max(0.0, 3 * nbytes / hbm - bottleneck) if reduce else 0.0
            yield env.timeout(float(latency.max()) + extra)
        for done in self.rank_done:
            done.succeed()
        return np.full(len(devs), env.now)

    # --- failures -------------------------------------------------------------------------
    def _lost_error(self, lost: list[int], devs) -> DeviceLostError:
        result = self.result
        names = ", ".join(f"device {devs[p].index} (rank {p})" for p in lost)
        waiting = [p for p in range(len(devs)) if p not in lost]
        return DeviceLostError(
            f"{result.kind} over devices {result.devices}: {names} was lost at "
            f"t={devs[lost[0]].lost_at * 1e6:.3f} us; ranks {waiting} waited on it and the "
            "collective failed: reset the simulator or rebuild the group without it"
        )

    def _fail(self, error: SimError, devs) -> None:
        if not self.known_error:
            for d in devs:
                d.fail(error)
        self.known_error = True


def _step_paths(sim: Simulator, devices: list[int], steps) -> dict:
    """Per distinct step key: its transfers' link ids (padded with the null link), their
    latencies, and whether two transfers share a link."""
    index = np.array(devices)
    out: dict = {}
    for key, src, dst, _, _ in steps:
        if key not in out:
            out[key] = _paths(sim, index[src], index[dst], sim.links.null)
    return out


def _paths(sim: Simulator, src_devices, dst_devices, null: int):
    routes = [sim.topology.route(int(a), int(b)) for a, b in zip(src_devices, dst_devices)]
    width = max((len(r) for r in routes), default=1) or 1
    paths = np.full((len(routes), width), null, dtype=np.int64)
    for i, r in enumerate(routes):
        paths[i, : len(r)] = r
    latency = sim.links.latency[paths].sum(axis=1)
    real = paths[paths != null]
    clash = len(np.unique(real)) != len(real)
    return paths, latency, clash
