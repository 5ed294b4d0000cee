"""Steps as captured graphs on a simulated chip (torch.kpt_sim.Graph).

The CUDA path replays one graph per padded bucket because its Triton kernel reads each
sequence's length on the device. The PyTorch attention path (the one kpt_sim runs) pads each
group of a step (the decodes; the prompt chunks) to its longest query and context, so a
step's kernels are fixed by its tokens, sampled rows and, per group, (sequences, longest
query, context width): one graph per such shape serves every step of that shape. Later steps
copy their inputs into the captured tensors and replay it, one message to the simulator
whatever the model's size, so a fleet of 8B-sized models runs in virtual time at the speed of
its scheduling, not of Python dispatching every kernel. The simulated host pays one launch
per replay, as a CUDA graph replay does; the kernels and their costs are the eager step's,
and so are the values (the simulator runs the captured kernels again on the new inputs).

Decode-only steps are captured the first time their shape comes (it will come again, one
step per token); steps with prompt tokens the second time, so a one-off prompt length costs
no capture.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kpt.serve._attention import AttentionGroup, AttentionMetadata, torch_groups
from kpt.serve._batch import StepBatch

MAX_GRAPHS = 64  # captured shapes kept (least recently used beyond); each holds its logits
MAX_SEEN = 4096  # shapes remembered as seen once (forgotten all at once beyond)


@dataclass
class _Captured:
    graph: object
    inputs: _Staged  # the captured step's input tensors, refilled before a replay
    logits: torch.Tensor


class StepGraphs:
    """Runs steps through graphs captured per shape (see the module doc)."""

    def __init__(self, forward: Callable[..., torch.Tensor], device: torch.device,
                 block_size: int, max_graphs: int = MAX_GRAPHS) -> None:  # fmt: skip
        module = getattr(torch, device.type)
        self._graph_type, self._capture = module.Graph, module.graph
        self._pool = module.graph_pool_handle()  # shapes replay one at a time: one pool
        self.forward = forward
        self.device = device
        self.block_size = block_size
        self.max_graphs = max_graphs
        self._entries: OrderedDict[tuple, _Captured] = OrderedDict()
        self._seen: set[tuple] = set()
        self.captures = 0
        self.replays = 0

    @staticmethod
    def offered(device: torch.device) -> bool:
        """Whether the device module captures graphs this way (a simulated chip's does)."""
        return device.type != "cuda" and hasattr(getattr(torch, device.type, None), "Graph")

    def run(self, batch: StepBatch) -> torch.Tensor | None:
        """Logits of the step's sampled rows, or None: run this step eagerly."""
        if batch.num_seqs == 0:
            return None
        groups = torch_groups(batch, self.block_size, lambda array: array)
        shape = tuple((g.batch, g.max_q, g.mask.shape[-1]) for g in groups)
        key = (batch.num_tokens, len(batch.sample_rows), shape)
        arrays = [batch.input_ids, batch.positions, batch.slot_mapping, batch.sample_rows]
        for g in groups:
            arrays += [g.token_index, g.valid_rows, g.out_index, g.block_tables, g.mask]
        entry = self._entries.get(key)
        if entry is None:
            if batch.num_tokens != batch.num_seqs and key not in self._seen:
                if len(self._seen) >= MAX_SEEN:
                    self._seen.clear()
                self._seen.add(key)
                return None
            entry = self._captured(arrays, [(g.batch, g.max_q) for g in groups])
            if len(self._entries) >= self.max_graphs:
                self._entries.popitem(last=False)[1].graph.reset()
            self._entries[key] = entry
        else:
            self._entries.move_to_end(key)
            entry.inputs.refill(arrays)
        entry.graph.replay()
        self.replays += 1
        return entry.logits

    def _captured(self, arrays: list[np.ndarray], sizes: list[tuple[int, int]]) -> _Captured:
        staged = _Staged(arrays, self.device)
        ids, positions, slots, rows = staged.inputs[:4]
        groups = [
            AttentionGroup(*staged.inputs[4 + 5 * i : 9 + 5 * i], batch=batch, max_q=max_q)
            for i, (batch, max_q) in enumerate(sizes)
        ]
        meta = AttentionMetadata(slot_mapping=slots, num_tokens=len(arrays[0]), groups=groups)
        graph = self._graph_type()
        with self._capture(graph, pool=self._pool):
            logits = self.forward(ids, positions, meta, rows)
        self.captures += 1
        return _Captured(graph, staged, logits)


class _Staged:
    """A step's inputs on the device, as views of two tensors (the integers, the masks), so
    that a replay's new inputs travel in two host-to-device copies, not one per array."""

    def __init__(self, arrays: list[np.ndarray], device: torch.device) -> None:
        self._masks = [a.dtype == np.bool_ for a in arrays]
        host = self._pack(arrays)
        self._device = [torch.from_numpy(h).to(device) for h in host]
        self.inputs, offsets = [], [0, 0]
        for array, mask in zip(arrays, self._masks, strict=True):
            flat, start = self._device[mask], offsets[mask]
            self.inputs.append(flat[start : start + array.size].view(array.shape))
            offsets[mask] += array.size

    def _pack(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        pick = [[a.ravel() for a, m in zip(arrays, self._masks, strict=True) if m == kind]
                for kind in (False, True)]  # fmt: skip
        return [np.concatenate(parts or [np.empty(0)]).astype(dtype)
                for parts, dtype in zip(pick, (np.int64, np.bool_), strict=True)]  # fmt: skip

    def refill(self, arrays: list[np.ndarray]) -> None:
        for target, host in zip(self._device, self._pack(arrays), strict=True):
            if host.size:
                target.copy_(torch.from_numpy(host))
