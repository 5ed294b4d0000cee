"""``torch.kpt_sim.Graph``: CUDA graphs on a simulated chip.

As with ``torch.cuda.CUDAGraph``, a capture records the kernels a region launches without
running them, and ``replay()`` runs them again on the same memory, inputs taken from the
tensors the capture read (copy new values into them first). The daemon keeps the captured
launches (kpt.sim's graph_begin / graph_launch), so a replay is one message however many
kernels it holds: the Python that dispatched them runs once, at capture. The simulated host
pays one launch per replay and the kernels run back to back, as a CUDA graph replay does.

Memory a capture allocates comes from the graph's pool (``graph_pool_handle()``, or one of its
own), not from the process's cache: tensors that die during the capture give their buffers
back to the pool, later allocations of the capture reuse them, and nothing outside the pool's
graphs is ever handed memory a replay writes. Graphs captured one after another may share a
pool, since their replays never overlap. The pool's buffers return to the cache when its last
graph is reset.

Refused during a capture, as CUDA refuses them: reading values to the host, host-to-device
copies and synchronizing; also, unlike CUDA, device-to-device copies between devices,
collectives and events (these graphs hold kernel launches only). Random ops draw new numbers
at each replay, as under CUDA graphs.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from kpt.adapters.sim._runtime import current_runtime, device_index, runtime

_graph_ids = itertools.count(1)  # the daemon keeps graphs per client: ids of this process


class GraphPool:
    """Memory private to the graphs that share it (CUDA's graph memory pool)."""

    def __init__(self) -> None:
        self.free: dict[tuple[int, int], list[int]] = defaultdict(list)  # (device, size) -> ids
        self._graphs = 0  # graphs captured into this pool and not reset
        self._allocator: Any = None  # the connection's allocator the buffers come from

    # SimStorage's allocator interface, for storages whose buffers belong to this pool
    def allocate(self, device: int, nbytes: int) -> Any:
        return self._allocator.allocate(device, nbytes)

    def release(self, device: int, buffer: int, size: int) -> None:
        self._allocator.release(device, buffer, size, self.free if self._graphs else None)

    def copy_bytes(self, source: int, target: int, nbytes: int) -> None:
        self._allocator.copy_bytes(source, target, nbytes)

    def retain(self, allocator: Any) -> None:
        if self._allocator is not None and allocator is not self._allocator:
            raise RuntimeError("kpt_sim graph pool: made under an earlier daemon connection")
        self._allocator = allocator
        self._graphs += 1

    def drop(self) -> None:
        """A graph of this pool was reset; the last one gives the free buffers to the cache."""
        self._graphs -= 1
        if self._graphs == 0:
            self._allocator.adopt(self.free)


def graph_pool_handle() -> GraphPool:
    """A pool that several graphs can be captured into (``Graph.capture_begin(pool=...)``)."""
    return GraphPool()


class Graph:
    """A captured sequence of kpt_sim kernels (the API of torch.cuda.CUDAGraph)."""

    def __init__(self) -> None:
        self._id: int | None = None
        self._runtime: Any = None  # the connection the daemon keeps the graph for
        self._device: int | None = None
        self._pool: GraphPool | None = None
        self._captured = False

    def capture_begin(self, pool: GraphPool | None = None) -> None:
        """Start capturing the current device's launches (a graph is captured once)."""
        if self._id is not None:
            raise RuntimeError("kpt_sim graph: already captured; reset() it to capture again")
        rt = runtime()
        device = device_index(None)
        if rt.state[device].capture is not None:
            raise RuntimeError(f"kpt_sim graph: device {device} is already capturing a graph")
        self._pool = pool if pool is not None else GraphPool()
        self._pool.retain(rt.allocator)
        self._id, self._device, self._runtime = next(_graph_ids), device, rt
        rt.client.graph("begin", self._id, device=device)
        rt.state[device].capture = self
        rt.allocator.capturing[device] = self._pool

    def capture_end(self) -> None:
        """End the capture; errors of the captured region (work refused during a capture) are
        raised here."""
        rt, device = self._runtime, self._device
        if rt is None or rt.state[device].capture is not self:
            raise RuntimeError("kpt_sim graph: capture_end() without capture_begin()")
        rt.state[device].capture = None
        rt.allocator.capturing.pop(device, None)
        rt.client.graph("end", self._id, device=device)
        try:
            rt.client.synchronize(device)
        except BaseException:
            self.reset()  # a region with refused work is no graph
            raise
        self._captured = True

    def replay(self) -> None:
        """Run the captured kernels again (asynchronously, like every launch)."""
        if not self._captured:
            raise RuntimeError("kpt_sim graph: replay() before a capture ended")
        self._runtime.client.graph("launch", self._id)

    def reset(self) -> None:
        """Forget the capture; its pool's memory is freed once no graph uses it."""
        if self._id is None:
            return
        graph_id, pool, rt = self._id, self._pool, self._runtime
        self._id, self._pool, self._runtime, self._captured = None, None, None, False
        pool.drop()
        if rt is not current_runtime():  # disconnected: the daemon forgot the graph with it
            return
        if rt.state[self._device].capture is self:  # reset inside a failed capture
            rt.state[self._device].capture = None
            rt.allocator.capturing.pop(self._device, None)
            rt.client.graph("end", graph_id, device=self._device)
        rt.client.graph("free", graph_id)

    def pool(self) -> GraphPool | None:
        """The pool this graph allocates from (share it: ``capture_begin(pool=g.pool())``)."""
        return self._pool

    def __del__(self) -> None:
        try:
            self.reset()
        except Exception:  # interpreter shutdown or a closed daemon: nothing left to free
            pass


@contextlib.contextmanager
def graph(g: Graph, pool: GraphPool | None = None) -> Iterator[Graph]:
    """``with torch.kpt_sim.graph(g):`` captures the block into g (as torch.cuda.graph)."""
    g.capture_begin(pool=pool)
    try:
        yield g
    except BaseException:
        g.reset()
        raise
    g.capture_end()
