"""One step's batch as arrays: token ids, positions, KV slots, block tables, rows to sample.

Built with numpy from each sequence's (tokens, start, block table) in one pass, with no loop
over tokens: the engine hands over Python lists once per sequence, and everything per token
(positions, slot of each new token, which rows get logits) is computed by array operations.
The runner copies the result to the device in one transfer (or, for CUDA graphs, into the
captured graph's fixed buffers, padded to its bucket).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# Queries of one sequence handled by one program of the Triton attention kernel.
QUERY_BLOCK = 16


@dataclass(frozen=True)
class SeqWork:
    """One sequence's part of a step."""

    token_ids: Sequence[int]  # the tokens whose KV this step computes
    start: int  # position of token_ids[0]
    block_table: Sequence[int]  # the sequence's blocks, covering start + len(token_ids)
    num_samples: int  # final rows that need logits: 0 (a prompt chunk with more to come),
    # 1, or 1 + drafts (speculative decoding verifies drafts in the same step)


@dataclass
class StepBatch:
    """A step's arrays (int64, on the host). Row r of the logits is token sample_rows[r]."""

    input_ids: np.ndarray  # [T]
    positions: np.ndarray  # [T]
    slot_mapping: np.ndarray  # [T] cache slot (block * block_size + offset) of each token
    sample_rows: np.ndarray  # [R] flat-batch rows whose logits are wanted
    query_start: np.ndarray  # [S + 1] first row of each sequence, then T
    seq_lens: np.ndarray  # [S] tokens in the cache after this step (context + new)
    counts: np.ndarray  # [S] new tokens of each sequence
    block_tables: np.ndarray  # [S, W] padded with block 0
    qblock_seq: np.ndarray  # [P] sequence of each block of QUERY_BLOCK queries
    qblock_index: np.ndarray  # [P] which block of that sequence's queries
    spans: list[tuple[int, int, int]]  # (sequence, first logits row, rows) for sampled ones

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens)


def build_step(work: Sequence[SeqWork], block_size: int) -> StepBatch:
    num_seqs = len(work)
    counts = np.fromiter((len(w.token_ids) for w in work), np.int64, num_seqs)
    starts = np.fromiter((w.start for w in work), np.int64, num_seqs)
    num_tokens = int(counts.sum())
    input_ids = np.fromiter(
        itertools.chain.from_iterable(w.token_ids for w in work), np.int64, num_tokens
    )
    query_start = np.zeros(num_seqs + 1, np.int64)
    np.cumsum(counts, out=query_start[1:])
    seq_of_token = np.repeat(np.arange(num_seqs), counts)
    positions = np.arange(num_tokens) - query_start[seq_of_token] + starts[seq_of_token]
    seq_lens = starts + counts

    table_lens = np.fromiter((len(w.block_table) for w in work), np.int64, num_seqs)
    width = max(int(table_lens.max()), 1)
    block_tables = np.zeros((num_seqs, width), np.int64)
    flat = np.fromiter(
        itertools.chain.from_iterable(w.block_table for w in work), np.int64, int(table_lens.sum())
    )
    row = np.repeat(np.arange(num_seqs), table_lens)
    col = np.arange(len(flat)) - np.repeat(np.cumsum(table_lens) - table_lens, table_lens)
    block_tables[row, col] = flat
    slot_mapping = (
        block_tables[seq_of_token, positions // block_size] * block_size + positions % block_size
    )

    samples = np.fromiter((w.num_samples for w in work), np.int64, num_seqs)
    seq_of_sample = np.repeat(np.arange(num_seqs), samples)
    first_sample = np.cumsum(samples) - samples
    sample_rows = (
        query_start[seq_of_sample + 1]
        - samples[seq_of_sample]
        + np.arange(int(samples.sum()))
        - first_sample[seq_of_sample]
    )
    spans = [(int(s), int(first_sample[s]), int(samples[s])) for s in np.flatnonzero(samples)]

    qblocks = -(-counts // QUERY_BLOCK)
    qblock_seq = np.repeat(np.arange(num_seqs), qblocks)
    qblock_index = np.arange(len(qblock_seq)) - np.repeat(np.cumsum(qblocks) - qblocks, qblocks)
    return StepBatch(
        input_ids=input_ids,
        positions=positions,
        slot_mapping=slot_mapping,
        sample_rows=sample_rows,
        query_start=query_start,
        seq_lens=seq_lens,
        counts=counts,
        block_tables=block_tables,
        qblock_seq=qblock_seq,
        qblock_index=qblock_index,
        spans=spans,
    )


def decode_step(positions: np.ndarray, block_tables: np.ndarray, block_size: int) -> StepBatch:
    """A step of one token per sequence at `positions`, whose ids the caller feeds on the
    device (chained decodes, draft proposals): the arrays without going through SeqWork."""
    rows, bounds, zeros, ones = _decode_constants(len(positions))
    return StepBatch(
        input_ids=zeros,
        positions=positions,
        slot_mapping=block_tables[rows, positions // block_size] * block_size
        + positions % block_size,
        sample_rows=rows,
        query_start=bounds,
        seq_lens=positions + 1,
        counts=ones,
        block_tables=block_tables,
        qblock_seq=rows,
        qblock_index=zeros,
        spans=[],  # row i of the logits is sequence i
    )


@functools.lru_cache(maxsize=16)
def _decode_constants(n: int) -> tuple[np.ndarray, ...]:
    """The arrays of a decode step that depend only on its size, made once (read-only: a
    step shares them): rows 0..n-1, query bounds 0..n, zeros, ones."""
    arrays = (np.arange(n), np.arange(n + 1), np.zeros(n, np.int64), np.ones(n, np.int64))
    for array in arrays:
        array.setflags(write=False)
    return arrays


def host_tensor(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor over `array` for uploading; read-only arrays (a decode step's shared
    constants) are copied first, since torch may not share them."""
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))


def table_array(tables: Sequence[Sequence[int]]) -> np.ndarray:
    """Block tables as one [S, W] array padded with block 0."""
    lens = np.fromiter((len(t) for t in tables), np.int64, len(tables))
    out = np.zeros((len(tables), max(int(lens.max(initial=0)), 1)), np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(tables), np.int64, int(lens.sum()))
    row = np.repeat(np.arange(len(tables)), lens)
    col = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
    out[row, col] = flat
    return out
