"""What a client tells the daemon about its host that the engine cannot see: a replayed graph
(``graph_replay``) and its own host work (``host_work``). A mixin of SimDaemon."""

from __future__ import annotations

from typing import Any

from kpt.sim._daemon_buffers import bad

MAX_HOST_WORK_S = 3600.0  # one host_work cast: an hour of host time is more than any step
GRAPH_HEAD, GRAPH_NODE = "head", "node"  # ClientState.graph: where a replayed graph stands


class IssueCalls:
    """The graph_replay and host_work handlers; needs ``self.sim`` and ``self._device``."""

    sim: Any

    def graph_replay(self, header: dict, state: Any, client_id: bytes) -> None:
        """{device, on}: the client's launches on `device` from here until `on` is false are
        one replayed graph (a CUDA graph): the first pays the host one launch, the rest none."""
        device = self._device(header)
        on = header.get("on")
        if type(on) is not bool:
            raise bad(f"graph_replay: field 'on' = {on!r:.40} must be true or false")
        if on:
            state.graph[device] = GRAPH_HEAD
        else:
            state.graph.pop(device, None)

    def host_work(self, header: dict, state: Any, client_id: bytes) -> None:
        """{device, seconds}: the client's host spent this long on its own work before what it
        issues next to `device` (work queued there goes on meanwhile)."""
        device = self._device(header)
        seconds = header.get("seconds")
        if type(seconds) not in (int, float) or not 0 <= seconds <= MAX_HOST_WORK_S:
            raise bad(
                f"host_work: field 'seconds' = {seconds!r:.40} must be a number in "
                f"[0, {MAX_HOST_WORK_S:g}]"
            )
        self.sim.host_work(device, float(seconds))

    @staticmethod
    def launches_as_graph_node(state: Any, device: int) -> bool:
        """Whether the client's next launch on `device` is a node of a replayed graph (costs
        the host nothing); the replay's first launch is not, and makes the rest nodes."""
        where = state.graph.get(device)
        if where == GRAPH_HEAD:
            state.graph[device] = GRAPH_NODE
        return where == GRAPH_NODE
