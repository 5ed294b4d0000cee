"""Recording what the daemon ran as an op trace that kpt.sim.replay() reads back.

Run a workload once (on any profile, with values), then replay its timing on other chips
without the workload or its values: `kpt-sim replay ops.json --profile mi300x:4`.
"""

from __future__ import annotations

import itertools
from typing import Any

from kpt.sim._op_cost import OpCost
from kpt.sim._replay import FORMAT

MAX_RECORDED_OPS = 2_000_000  # about 0.5 GB of host memory; later ops are counted only


class OpRecorder:
    """Ops in the replay format, in the order the daemon ran them (all clients together)."""

    def __init__(self, limit: int = MAX_RECORDED_OPS) -> None:
        self.ops: list[dict[str, Any]] = []
        self.dropped = 0
        self.limit = limit
        self._buffers: set[int] = set()  # allocated while recording: their frees make sense

    def add(self, op: dict[str, Any]) -> None:
        if len(self.ops) < self.limit:
            self.ops.append(op)
        else:
            self.dropped += 1

    def alloc(self, device: int, nbytes: int, buffer: int) -> None:
        self._buffers.add(buffer)
        self.add({"op": "alloc", "device": device, "bytes": nbytes, "id": buffer})

    def free(self, buffer: int) -> None:
        if buffer in self._buffers:
            self._buffers.discard(buffer)
            self.add({"op": "free", "id": buffer})

    def launch(self, device: int, cost: OpCost, stream: int, name: str, host_ops: int = 0) -> None:
        op = {"op": "launch", "device": device, "class": cost.op_class, "flops": cost.flops,
              "bytes": cost.bytes, "dtype": cost.dtype, "stream": stream, "name": name}  # fmt: skip
        if cost.shape is not None:
            op["shape"] = list(cost.shape)
        if host_ops:
            op["host_ops"] = host_ops
        self.add(op)

    def collective(
        self, kind: str, nbytes: int, stream: int, devices: list[int], algorithm, options: dict
    ) -> None:
        op = {"op": "collective", "kind": kind, "bytes": nbytes, "stream": stream}
        op.update((k, v) for k, v in options.items() if v is not None)
        if algorithm is not None:
            op["algorithm"] = algorithm
        if kind != "send_recv":
            op["devices"] = devices
        self.add(op)

    def document(self, sim: Any) -> dict[str, Any]:
        names = [d.profile.name for d in sim.devices]
        spec = ",".join(f"{n}:{len(list(g))}" for n, g in itertools.groupby(names))
        return {
            "format": FORMAT,
            "version": 1,
            "profile": spec,
            "devices": len(names),
            "topology": sim.topology.kind,
            "nodes": sim.topology.nodes,
            "dropped_ops": self.dropped,
            "ops": self.ops,
        }
