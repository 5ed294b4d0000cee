"""Turns a step's batch into device tensors, runs the model, returns the rows to sample.

Three ways to run a step, chosen once per engine:
- PyTorch (any device): attention by SDPA over gathered blocks (_attention.py), eager.
- Triton (CUDA, or the Triton interpreter on the CPU): the paged kernel reads the cache in
  place; the step's arrays travel in one host-to-device copy.
- CUDA graphs (on CUDA with Triton): each step is padded to a bucket of (tokens, sequences)
  and replays a graph captured for that bucket (_graphs.py); steps larger than every bucket
  run eagerly.
On a simulated chip whose device module times graph replays (torch.kpt_sim.graph_replay), each
forward is timed as the one replay CUDA would run: the simulated host pays one launch for it,
not one per kernel. Steps replay graphs captured per shape (torch.kpt_sim.Graph, _sim_graphs.py),
so their Python runs once per shape, not once per step.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from kpt.serve._attention import AttentionMetadata, PagedMetadata, torch_groups
from kpt.serve._batch import SeqWork, StepBatch, build_step, host_tensor
from kpt.serve._graphs import BucketedGraphs, HostStaging
from kpt.serve._models import DecoderModel, KVCache
from kpt.serve._sim_graphs import StepGraphs
from kpt.serve._triton_attention import supports as supports_head_dim
from kpt.serve._triton_attention import triton_available


class ModelRunner:
    """Owns the model and its KV cache on one device."""

    def __init__(
        self,
        model: DecoderModel,
        cache: KVCache,
        block_size: int,
        device,
        *,
        use_triton: bool = False,
        graphs: bool = False,
        capture: bool = True,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 2048,
        max_blocks_per_seq: int = 64,
        samples_per_seq: int = 1,
        replay_timing: Callable[[torch.device], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        self.model = model
        self.replay_timing = replay_timing  # times each forward as one graph replay
        self.cache = cache
        self.block_size = block_size
        self.device = torch.device(device)
        self.use_triton = use_triton
        self._staging = HostStaging(self.device)
        self.graphs = (
            BucketedGraphs(
                functools.partial(model_forward, model, cache),  # not a bound method: no cycle
                self.device,
                block_size=block_size,
                scratch_slot=cache.scratch_slot,
                max_tokens=max_num_batched_tokens,
                max_seqs=max_num_seqs,
                block_width=max_blocks_per_seq,
                samples_per_seq=samples_per_seq,
                capture=capture,
            )
            if graphs and use_triton
            else None
        )
        self.step_graphs = (
            StepGraphs(functools.partial(model_forward, model, cache), self.device, block_size)
            if replay_timing is not None and not use_triton and StepGraphs.offered(self.device)
            else None
        )

    # no_grad, not inference_mode: what a step returns stays a normal tensor, which its caller
    # may update in place outside inference_mode (an inference tensor refuses that).
    @torch.no_grad()
    def run(self, work: Sequence[SeqWork]) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """Compute the KV of every sequence's new tokens; logits for the rows it asks for.

        Returns (logits [rows, vocab], spans): a span is (index into work, first row, rows).
        """
        batch = build_step(work, self.block_size)
        return self.run_batch(batch), batch.spans

    @torch.no_grad()
    def run_batch(self, batch: StepBatch, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of batch.sample_rows. input_ids, a device tensor, replaces the batch's ids
        (a chained decode feeds the previous step's sampled tokens without reading them)."""
        if self.step_graphs is not None and input_ids is None:
            logits = self.step_graphs.run(batch)
            if logits is not None:
                return logits
        if self.replay_timing is not None:
            with self.replay_timing(self.device):
                return self._run_batch(batch, input_ids)
        return self._run_batch(batch, input_ids)

    def _run_batch(self, batch: StepBatch, input_ids: torch.Tensor | None) -> torch.Tensor:
        if self.graphs is not None:
            logits = self.graphs.run(batch, input_ids)
            if logits is not None:
                return logits
        return self._eager(batch, input_ids)

    def _eager(self, batch: StepBatch, input_ids: torch.Tensor | None) -> torch.Tensor:
        if self.use_triton:
            ids, positions, slots, rows, qstart, seq_lens, qb_seq, qb_index, tables = (
                self._staging.upload(
                    [
                        batch.input_ids,
                        batch.positions,
                        batch.slot_mapping,
                        batch.sample_rows,
                        batch.query_start,
                        batch.seq_lens,
                        batch.qblock_seq,
                        batch.qblock_index,
                        batch.block_tables,
                    ]
                )
            )
            meta = AttentionMetadata(
                slot_mapping=slots,
                num_tokens=batch.num_tokens,
                paged=PagedMetadata(qstart, seq_lens, tables, qb_seq, qb_index),
            )
        else:
            ids, positions, slots, rows = self._staging.upload(
                [batch.input_ids, batch.positions, batch.slot_mapping, batch.sample_rows]
            )
            meta = AttentionMetadata(
                slot_mapping=slots,
                num_tokens=batch.num_tokens,
                groups=torch_groups(batch, self.block_size, self._to_device),
            )
        if input_ids is not None:
            ids = input_ids
        return self._forward(ids, positions, meta, rows)

    def _forward(self, ids, positions, meta: AttentionMetadata, sample_rows) -> torch.Tensor:
        return model_forward(self.model, self.cache, ids, positions, meta, sample_rows)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return host_tensor(array).to(self.device)


def model_forward(
    model: DecoderModel, cache: KVCache, ids, positions, meta: AttentionMetadata, sample_rows
) -> torch.Tensor:
    """KV of the step's tokens into the cache; logits of the rows sampled."""
    hidden = model(ids, positions, meta, cache)
    if sample_rows.shape[0] == 0:
        return hidden.new_empty(0, model.config.vocab_size)
    return model.logits(hidden.index_select(0, sample_rows))


def make_runner(
    model: DecoderModel,
    cache: KVCache,
    device: torch.device,
    *,
    attention: str,
    cuda_graphs: bool | None,
    block_size: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    max_len: int,
    samples_per_seq: int,
) -> ModelRunner:
    """A runner on the path EngineConfig asks for: Triton where it runs ("auto": on CUDA),
    CUDA graphs on top of it (None: on CUDA); on a simulated chip that times graph replays,
    forwards timed as replays unless cuda_graphs is False."""
    head_dim = model.config.head_dim
    if attention == "auto":
        use_triton = device.type == "cuda" and triton_available() and supports_head_dim(head_dim)
    else:
        use_triton = attention == "triton"
        if use_triton and not (triton_available() and supports_head_dim(head_dim)):
            raise ValueError(
                f"attention='triton' needs the triton package and a power-of-two head size "
                f">= 16 (this model's is {head_dim}); use attention='torch'"
            )
    graphs = cuda_graphs if cuda_graphs is not None else device.type == "cuda"
    return ModelRunner(
        model,
        cache,
        block_size,
        device,
        use_triton=use_triton,
        graphs=bool(graphs) and use_triton,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_blocks_per_seq=-(-max_len // block_size),
        samples_per_seq=samples_per_seq,
        replay_timing=_replay_timing(device) if cuda_graphs is not False else None,
    )


def _replay_timing(device: torch.device):
    """The device module's graph_replay() where a simulated chip offers it (torch.kpt_sim)."""
    if device.type == "cuda":
        return None  # the real thing: BucketedGraphs
    return getattr(getattr(torch, device.type, None), "graph_replay", None)
