"""Paged attention as one Triton kernel: prompt chunks and decodes alike, straight from the cache.

One program handles QUERY_BLOCK queries of one sequence for one head. It walks the sequence's
keys in tiles of KEY_BLOCK, finding each key's slot through the block table, with an online
softmax (flash attention), so nothing is gathered or padded. Which sequence and which block of
its queries a program takes comes from two small arrays (qblock_seq, qblock_index) built with
the batch, so the grid depends only on their length: a CUDA graph captured for a bucket of
shapes replays for any batch that fits it (entries of -1 are padding and do nothing), and the
loop bounds are read from seq_lens on the device.

The kernel is compiled on first use (triton.jit is applied then, not at import), so that
TRITON_INTERPRET=1 set by a test before that still selects the interpreter on the CPU.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from kpt.serve._batch import QUERY_BLOCK

KEY_BLOCK = 64


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def supports(head_dim: int) -> bool:
    """tl.dot needs a power-of-two inner size of at least 16."""
    return head_dim >= 16 and head_dim & (head_dim - 1) == 0


@functools.cache
def _kernel() -> Any:
    import triton
    import triton.language as tl

    def paged_attention_kernel(
        q_ptr,
        k_cache_ptr,
        v_cache_ptr,
        out_ptr,
        block_tables_ptr,
        seq_lens_ptr,
        query_start_ptr,
        qblock_seq_ptr,
        qblock_index_ptr,
        scale,
        stride_q_token,
        stride_q_head,
        stride_cache_slot,
        stride_cache_head,
        stride_out_token,
        stride_out_head,
        stride_table,
        BLOCK_SIZE: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        GROUP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        IEEE: tl.constexpr,
    ):
        program = tl.program_id(0)
        head = tl.program_id(1)
        seq_raw = tl.load(qblock_seq_ptr + program)
        padding = seq_raw < 0
        seq = tl.maximum(seq_raw, 0)
        qblock = tl.load(qblock_index_ptr + program)
        q_first = tl.load(query_start_ptr + seq)
        q_len = tl.load(query_start_ptr + seq + 1) - q_first
        q_len = tl.where(padding, 0, q_len)
        seq_len = tl.load(seq_lens_ptr + seq)
        offs_m = qblock * BLOCK_M + tl.arange(0, BLOCK_M)
        m_valid = offs_m < q_len
        q_pos = seq_len - q_len + offs_m  # position of each query in its sequence
        offs_d = tl.arange(0, HEAD_DIM)
        q = tl.load(
            q_ptr
            + (q_first + offs_m)[:, None] * stride_q_token
            + head * stride_q_head
            + offs_d[None, :],
            mask=m_valid[:, None],
            other=0.0,
        )
        kv_head = head // GROUP
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        # Keys up to the last query of this block (causal); none for padding programs.
        key_end = tl.minimum(seq_len, seq_len - q_len + (qblock + 1) * BLOCK_M)
        key_end = tl.where(padding | (qblock * BLOCK_M >= q_len), 0, key_end)
        for key_start in range(0, key_end, BLOCK_N):
            offs_n = key_start + tl.arange(0, BLOCK_N)
            n_valid = offs_n < key_end
            block = tl.load(
                block_tables_ptr + seq * stride_table + offs_n // BLOCK_SIZE,
                mask=n_valid,
                other=0,
            )
            slot = block * BLOCK_SIZE + offs_n % BLOCK_SIZE
            kv_offsets = (
                slot[:, None] * stride_cache_slot + kv_head * stride_cache_head + offs_d[None, :]
            )
            k = tl.load(k_cache_ptr + kv_offsets, mask=n_valid[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = s * scale
            attend = (offs_n[None, :] <= q_pos[:, None]) & n_valid[None, :]
            s = tl.where(attend, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_cache_ptr + kv_offsets, mask=n_valid[:, None], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(
            out_ptr
            + (q_first + offs_m)[:, None] * stride_out_token
            + head * stride_out_head
            + offs_d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=m_valid[:, None],
        )

    return triton.jit(paged_attention_kernel)


def triton_paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start: torch.Tensor,
    qblock_seq: torch.Tensor,
    qblock_index: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """q [T, heads, head_dim]; caches [blocks, block_size, kv_heads, head_dim]. Returns
    [T, heads * head_dim]; rows of tokens that belong to no sequence (padding) are zero."""
    num_tokens, heads, head_dim = q.shape
    _, block_size, kv_heads, _ = k_cache.shape
    out = torch.zeros(num_tokens, heads, head_dim, dtype=q.dtype, device=q.device)
    grid = (qblock_seq.shape[0], heads)
    _kernel()[grid](
        q,
        k_cache,
        v_cache,
        out,
        block_tables,
        seq_lens,
        query_start,
        qblock_seq,
        qblock_index,
        scale,
        q.stride(0),
        q.stride(1),
        k_cache.stride(1),
        k_cache.stride(2),
        out.stride(0),
        out.stride(1),
        block_tables.stride(0),
        BLOCK_SIZE=block_size,
        HEAD_DIM=head_dim,
        GROUP=heads // kv_heads,
        BLOCK_M=QUERY_BLOCK,
        BLOCK_N=KEY_BLOCK,
        IEEE=q.dtype == torch.float32,
    )
    return out.view(num_tokens, heads * head_dim)
