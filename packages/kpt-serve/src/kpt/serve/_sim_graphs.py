"""Decode steps as captured graphs on a simulated chip (torch.kpt_sim.Graph).

The CUDA path replays one graph per padded bucket because its Triton kernel reads each
sequence's length on the device. The PyTorch attention path (the one kpt_sim runs) pads a
step's decodes to the longest context in blocks, so its kernels are fixed by (sequences,
context blocks): one graph per such pair serves every decode step of that shape. A graph is
captured at the first step of its shape; later steps copy their inputs into the captured
tensors and replay it, one message to the simulator whatever the model's size, so that a
fleet of 8B-sized models runs in virtual time at the speed of its scheduling, not of Python
dispatching every kernel. The simulated host pays one launch per replay, as a CUDA graph
replay does, and the kernels and their costs are those of the eager step.

Steps with prompt tokens run eagerly (their shapes rarely repeat). A replay computes the same
values as the eager step: the daemon runs the captured kernels again on the new inputs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kpt.serve._attention import AttentionGroup, AttentionMetadata, torch_groups
from kpt.serve._batch import StepBatch, host_tensor

MAX_GRAPHS = 64  # captured shapes kept (least recently used beyond); each holds its logits


@dataclass
class _Captured:
    graph: object
    inputs: list[torch.Tensor]  # the captured step's input tensors, refilled before a replay
    logits: torch.Tensor


class DecodeGraphs:
    """Runs decode-only steps through graphs captured per (sequences, context blocks)."""

    def __init__(self, forward: Callable[..., torch.Tensor], device: torch.device,
                 block_size: int, max_graphs: int = MAX_GRAPHS) -> None:  # fmt: skip
        module = getattr(torch, device.type)
        self._graph_type, self._capture = module.Graph, module.graph
        self._pool = module.graph_pool_handle()  # shapes replay one at a time: one pool
        self.forward = forward
        self.device = device
        self.block_size = block_size
        self.max_graphs = max_graphs
        self._entries: OrderedDict[tuple[int, int], _Captured] = OrderedDict()
        self.captures = 0
        self.replays = 0

    @staticmethod
    def offered(device: torch.device) -> bool:
        """Whether the device module captures graphs this way (a simulated chip's does)."""
        return device.type != "cuda" and hasattr(getattr(torch, device.type, None), "Graph")

    def run(self, batch: StepBatch) -> torch.Tensor | None:
        """Logits of a decode-only step (every sequence one new token, each sampled), or None
        for a step this cannot replay."""
        seqs = batch.num_seqs
        if seqs == 0 or batch.num_tokens != seqs or len(batch.sample_rows) != seqs:
            return None
        arrays = self._arrays(batch)
        key = (seqs, arrays[-1].shape[-1])  # the mask's width: context blocks * block size
        entry = self._entries.get(key)
        if entry is None:
            entry = self._captured(arrays)
            if len(self._entries) >= self.max_graphs:
                self._entries.popitem(last=False)[1].graph.reset()
            self._entries[key] = entry
        else:
            self._entries.move_to_end(key)
            for target, array in zip(entry.inputs, arrays, strict=True):
                target.copy_(host_tensor(array))
        entry.graph.replay()
        self.replays += 1
        return entry.logits

    def _arrays(self, batch: StepBatch) -> list[np.ndarray]:
        """The step's inputs as host arrays: ids, positions, slots, sampled rows, then the
        decode group's token index, valid rows, output index, block tables and mask."""
        (group,) = torch_groups(batch, self.block_size, lambda array: array)
        return [batch.input_ids, batch.positions, batch.slot_mapping, batch.sample_rows,
                group.token_index, group.valid_rows, group.out_index, group.block_tables,
                group.mask]  # fmt: skip

    def _captured(self, arrays: list[np.ndarray]) -> _Captured:
        inputs = [host_tensor(array).to(self.device) for array in arrays]
        ids, positions, slots, rows, token_index, valid_rows, out_index, tables, mask = inputs
        group = AttentionGroup(token_index, valid_rows, out_index, tables, mask,
                               batch=tables.shape[0], max_q=1)  # fmt: skip
        meta = AttentionMetadata(slot_mapping=slots, num_tokens=len(arrays[0]), groups=[group])
        graph = self._graph_type()
        with self._capture(graph, pool=self._pool):
            logits = self.forward(ids, positions, meta, rows)
        self.captures += 1
        return _Captured(graph, inputs, logits)
