"""Paged attention in plain PyTorch: runs wherever aten runs (cpu, kpt_sim, cuda, ...).

The KV cache of one layer is a pair of tensors [num_blocks, block_size, kv_heads, head_dim].
A sequence owns a list of blocks (its block table); token t of the sequence lives in block
table[t // block_size] at offset t % block_size. New K/V are written by slot
(block * block_size + offset) with one index_copy_, and attention reads a sequence's blocks
back by gathering its table. Sequences are attended in groups of similar query length (all
decodes together, prefill chunks together) so that padding stays inside a group. Where Triton
runs, one kernel reads the blocks in place instead (_triton_attention.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from kpt.serve._batch import StepBatch
from kpt.serve._triton_attention import triton_paged_attention


@dataclass
class AttentionGroup:
    """Sequences attended in one padded call: B sequences, up to max_q queries each."""

    token_index: torch.Tensor  # [B * max_q] row of each padded query in the flat batch (0 pads)
    valid_rows: torch.Tensor  # [n_real] padded row of each real query (no boolean masks:
    # a value-dependent shape would leave the device on kpt_sim)
    out_index: torch.Tensor  # [n_real] flat-batch row of each real query, in padded order
    block_tables: torch.Tensor  # [B, max_blocks] long, padded with block 0
    mask: torch.Tensor  # [B, 1, max_q, max_blocks * block_size] bool, True where attended
    batch: int
    max_q: int


@dataclass
class PagedMetadata:
    """What the Triton kernel reads (see _triton_attention.py); tensors on the device."""

    query_start: torch.Tensor  # [S + 1]
    seq_lens: torch.Tensor  # [S]
    block_tables: torch.Tensor  # [S, W]
    qblock_seq: torch.Tensor  # [P], -1 for padding
    qblock_index: torch.Tensor  # [P]


@dataclass
class AttentionMetadata:
    """Everything attention needs for one step, built once and shared by every layer.

    `paged` is set when the Triton kernel runs (CUDA, or TRITON_INTERPRET on the CPU);
    otherwise `groups` drive plain PyTorch SDPA.
    """

    slot_mapping: torch.Tensor  # [T] long: cache slot of each new token
    num_tokens: int
    groups: list[AttentionGroup] = field(default_factory=list)
    paged: PagedMetadata | None = None


def torch_groups(batch: StepBatch, block_size: int, to_device) -> list[AttentionGroup]:
    """Decodes (one query) in one group, prompt chunks in another, padded to the longest;
    built with array operations from the step's batch."""
    groups = []
    for members in (np.flatnonzero(batch.counts == 1), np.flatnonzero(batch.counts > 1)):
        if len(members) == 0:
            continue
        counts = batch.counts[members]
        seq_lens = batch.seq_lens[members]
        max_q = int(counts.max())
        max_blocks = int((-(-seq_lens // block_size)).max())
        steps = np.arange(max_q)[None, :]
        real = steps < counts[:, None]
        rows = batch.query_start[members][:, None] + steps
        q_pos = np.where(real, (seq_lens - counts)[:, None] + steps, 0)  # pads attend key 0
        keys = np.arange(max_blocks * block_size)
        mask = (keys[None, None, :] <= q_pos[:, :, None]) & (
            keys[None, None, :] < seq_lens[:, None, None]
        )
        tables = batch.block_tables[members][:, :max_blocks]
        if tables.shape[1] < max_blocks:
            tables = np.pad(tables, ((0, 0), (0, max_blocks - tables.shape[1])))
        groups.append(
            AttentionGroup(
                token_index=to_device(np.where(real, rows, 0).ravel()),
                valid_rows=to_device(np.flatnonzero(real.ravel())),
                out_index=to_device(rows[real]),
                block_tables=to_device(tables),
                mask=to_device(mask[:, None]),
                batch=len(members),
                max_q=max_q,
            )
        )
    return groups


def write_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots
) -> None:
    """Store the step's new keys and values ([T, kv_heads, head_dim]) into their slots."""
    kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    k_cache.view(-1, kv_heads, head_dim).index_copy_(0, slots, k.to(k_cache.dtype))
    v_cache.view(-1, kv_heads, head_dim).index_copy_(0, slots, v.to(v_cache.dtype))


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Causal attention of the step's queries q [T, heads, head_dim] over the cached context.

    The new tokens' K/V must already be written (write_kv). Returns [T, heads * head_dim].
    """
    if meta.paged is not None:
        p = meta.paged
        return triton_paged_attention(
            q,
            k_cache,
            v_cache,
            p.block_tables,
            p.seq_lens,
            p.query_start,
            p.qblock_seq,
            p.qblock_index,
            scale,
        )
    num_tokens, heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    per_kv = heads // kv_heads  # query heads each KV head serves (grouped-query attention)
    out = q.new_empty(num_tokens, heads * head_dim)
    for group in meta.groups:
        b, max_q = group.batch, group.max_q
        # The query heads that share a KV head become rows of one attention over that head
        # ([b, kv_heads, max_q * per_kv, head_dim], row = position * per_kv + head), so the
        # keys and values are read as they are, not copied per_kv times over.
        qg = q.index_select(0, group.token_index).view(b, max_q, kv_heads, per_kv, head_dim)
        qg = qg.permute(0, 2, 1, 3, 4).reshape(b, kv_heads, max_q * per_kv, head_dim)
        kg = k_cache[group.block_tables].view(b, -1, kv_heads, head_dim).transpose(1, 2)
        vg = v_cache[group.block_tables].view(b, -1, kv_heads, head_dim).transpose(1, 2)
        mask = group.mask if per_kv == 1 else group.mask.repeat_interleave(per_kv, dim=2)
        og = F.scaled_dot_product_attention(
            qg, kg.to(qg.dtype), vg.to(qg.dtype), attn_mask=mask, scale=scale
        )
        og = og.view(b, kv_heads, max_q, per_kv, head_dim).permute(0, 2, 1, 3, 4)
        og = og.reshape(b * max_q, heads * head_dim)
        out.index_copy_(0, group.out_index, og.index_select(0, group.valid_rows))
    return out
