"""Captured graphs, as CUDA graphs: a client records a run of launches once and replays it with
one message. A mixin of SimDaemon.

While a client captures on a device (``graph_begin`` .. ``graph_end``), its launches there are
checked and costed as ever but neither run nor timed: they become the graph's nodes. A
``graph_launch`` then issues every node in order, as one replay: the first pays the host one
launch, the rest run back to back, and with values on the executor runs each node again on the
buffers it was captured on. A replay costs the daemon one message and no re-checking or
re-costing per node, which is what lets a serving engine's decode steps run in virtual time
as fast as their simulated time needs.

Nodes keep the checked buffers they touch. The client must keep those buffers (CUDA's graph
memory pool); a replay first checks that each one is still the same live buffer of this client,
so a freed or re-allocated buffer is an error, never another client's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kpt.sim._daemon_buffers import bad, field_int

MAX_GRAPHS_PER_CLIENT = 4096
MAX_GRAPH_ID = (1 << 62) - 1
MAX_NODES = 1 << 20  # per graph: far beyond one model step's launches


@dataclass
class Node:
    """One captured launch: what Simulator.launch and the executor need to issue it again."""

    stream: int
    cost: Any
    touched: list[int]
    op: str
    in_views: list
    out_views: list
    attrs: dict


@dataclass
class Graph:
    device: int
    nodes: list[Node] = field(default_factory=list)
    buffers: dict[int, Any] = field(default_factory=dict)  # id -> the Buffer captured on
    replays: int = 0


class GraphCalls:
    """graph_begin / graph_end / graph_launch / graph_free; needs SimDaemon's ``sim``,
    ``buffers``, ``executor``, ``numerics``, ``recorder``, ``_device`` and ``_claim``."""

    def graph_begin(self, header: dict, state: Any, client_id: bytes) -> None:
        """{device, graph}: this client's launches on `device` are captured into graph `graph`
        (an id the client chose) until graph_end."""
        device = self._device(header)
        graph = field_int(header, "graph", high=MAX_GRAPH_ID)
        if device in state.capturing:
            raise bad(f"graph_begin: device {device} is already capturing; end that graph first")
        if graph in state.graphs or any(c[0] == graph for c in state.capturing.values()):
            raise bad(f"graph_begin: graph {graph} exists; free it or choose another id")
        if len(state.graphs) >= MAX_GRAPHS_PER_CLIENT:
            raise bad(f"graph_begin: {len(state.graphs)} graphs held, the limit; free some")
        state.capturing[device] = (graph, Graph(device))

    def graph_end(self, header: dict, state: Any, client_id: bytes) -> None:
        """{device}: the capture on `device` ends; its graph can be launched."""
        device = self._device(header)
        capture = state.capturing.pop(device, None)
        if capture is None:
            raise bad(f"graph_end: device {device} is not capturing")
        graph_id, graph = capture
        state.graphs[graph_id] = graph

    def graph_launch(self, header: dict, state: Any, client_id: bytes) -> None:
        """{graph}: issue the graph's nodes again, as one replayed graph."""
        graph = self._graph(header, state)
        if graph.device in state.capturing:
            raise bad(f"graph_launch: device {graph.device} is capturing; end that graph first")
        for buffer_id, buffer in graph.buffers.items():
            if self.buffers.live(buffer_id) is not buffer:
                raise bad(
                    f"graph_launch: buffer {buffer_id}, which the graph was captured on, was "
                    "freed; keep a graph's buffers (its memory pool) while the graph lives"
                )
        graph.replays += 1
        self._claim(state, graph.device, self._issue, graph)

    def _issue(self, graph: Graph) -> None:
        device, launch, recorder = graph.device, self.sim.launch, self.recorder
        run = self.executor.run if self.numerics else None
        for i, node in enumerate(graph.nodes):
            launch(device, node.cost, node.stream, node.touched, node.op, None, i > 0, 0)
            if recorder is not None:
                recorder.launch(device, node.cost, node.stream, node.op, 0)
            if run is not None:
                run(node.op, node.in_views, node.out_views, _fresh_draws(node, graph))

    def graph_free(self, header: dict, state: Any, client_id: bytes) -> None:
        """{graph}: forget the graph (its buffers are the client's to free)."""
        self._graph(header, state)
        del state.graphs[header["graph"]]

    @staticmethod
    def capture(state: Any, device: int, stream: int, cost: Any, op: str, inputs: list,
                outputs: list, attrs: dict) -> bool:  # fmt: skip
        """Record a checked launch as a node if the client captures on `device` (True)."""
        capture = state.capturing.get(device) if state.capturing else None
        if capture is None:
            return False
        graph = capture[1]
        if len(graph.nodes) >= MAX_NODES:
            raise bad(f"graph {capture[0]}: more than {MAX_NODES} launches in one capture")
        for _, buffer in (*inputs, *outputs):
            graph.buffers[buffer.id] = buffer
        graph.nodes.append(Node(
            stream, cost, [b.id for _, b in (*inputs, *outputs)], op,
            [v for v, _ in inputs], [v for v, _ in outputs], attrs,
        ))  # fmt: skip
        return True

    @staticmethod
    def refuse_while_capturing(state: Any, devices, what: str) -> None:
        """Work that is not a graph node here is refused on a device the client is capturing
        on: host reads, writes and waits, as CUDA refuses them during stream capture; copies,
        collectives and events, which a CUDA graph can hold but these graphs do not (they would
        run or be timed at capture, not at each replay)."""
        if not state.capturing:
            return
        for device in devices:
            if device in state.capturing:
                raise bad(
                    f"{what} on device {device} while it captures graph "
                    f"{state.capturing[device][0]}: only launches are captured; end the graph first"
                )

    def _graph(self, header: dict, state: Any) -> Graph:
        graph_id = field_int(header, "graph", high=MAX_GRAPH_ID)
        graph = state.graphs.get(graph_id)
        if graph is None:
            raise bad(f"graph {graph_id} does not exist (never captured, or freed)")
        return graph


def _fresh_draws(node: Node, graph: Graph) -> dict:
    """A random op's attrs for this replay: each replay draws new numbers (as a CUDA graph's
    philox offset advances per replay), the same ones for the same replay count."""
    rng = node.attrs.get("rng")
    if type(rng) not in (list, tuple) or len(rng) != 2:
        return node.attrs
    # An odd step (the golden ratio's): the low 32 bits that seed a CPU generator change too.
    step = (graph.replays * 0x9E3779B97F4A7C15) & ((1 << 63) - 1)
    return {**node.attrs, "rng": [rng[0], (rng[1] + step) & ((1 << 63) - 1)]}
