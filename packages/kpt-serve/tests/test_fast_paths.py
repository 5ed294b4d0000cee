"""The GPU paths checked on the CPU: batch arrays, the Triton paged kernel (interpreter), the
padded fixed buffers CUDA graphs replay, and draft-model speculation; plus the same on CUDA
when there is one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import hf_greedy, make_gpt2, random_prompts

from kpt.serve import LLM, SamplingParams
from kpt.serve._batch import QUERY_BLOCK, SeqWork, build_step

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)


def test_step_arrays_come_from_each_sequence_without_token_loops():
    work = [
        SeqWork([5, 6, 7], start=0, block_table=[3], num_samples=1),
        SeqWork([9], start=20, block_table=[1, 4], num_samples=1),
        SeqWork(list(range(18)), start=16, block_table=[2, 0, 7], num_samples=0),
        SeqWork([8, 8, 8], start=5, block_table=[6], num_samples=3),
    ]
    b = build_step(work, block_size=16)
    assert b.input_ids.tolist() == [5, 6, 7, 9, *range(18), 8, 8, 8]
    assert b.positions.tolist() == [0, 1, 2, 20, *range(16, 34), 5, 6, 7]
    assert b.slot_mapping[:4].tolist() == [48, 49, 50, 4 * 16 + 4]
    assert b.slot_mapping[4] == 0 * 16 + 0 and b.slot_mapping[4 + 16] == 7 * 16 + 0
    assert b.query_start.tolist() == [0, 3, 4, 22, 25]
    assert b.seq_lens.tolist() == [3, 21, 34, 8]
    assert b.sample_rows.tolist() == [2, 3, 22, 23, 24]
    assert b.spans == [(0, 0, 1), (1, 1, 1), (3, 2, 3)]
    assert b.block_tables.tolist() == [[3, 0, 0], [1, 4, 0], [2, 0, 7], [6, 0, 0]]
    # 18 queries take two blocks of QUERY_BLOCK, the others one each.
    assert QUERY_BLOCK == 16
    assert b.qblock_seq.tolist() == [0, 1, 2, 2, 3]
    assert b.qblock_index.tolist() == [0, 0, 0, 1, 0]


@pytest.fixture
def interpreted_triton(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the interpreter check is for machines without CUDA")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # conftest set it before any import
    pytest.importorskip("triton")


def _reference_attention(q, k_cache, v_cache, work, block_size, scale):
    """Plain causal attention per sequence over its gathered blocks."""
    outs, row = [], 0
    heads, kv_heads = q.shape[1], k_cache.shape[2]
    for w in work:
        n = len(w.token_ids)
        ctx = w.start + n
        slots = [w.block_table[p // block_size] * block_size + p % block_size for p in range(ctx)]
        k = k_cache.view(-1, kv_heads, k_cache.shape[-1])[slots].transpose(0, 1)
        v = v_cache.view(-1, kv_heads, v_cache.shape[-1])[slots].transpose(0, 1)
        k = k.repeat_interleave(heads // kv_heads, 0)
        v = v.repeat_interleave(heads // kv_heads, 0)
        qs = q[row : row + n].transpose(0, 1)
        mask = torch.arange(ctx)[None, :] <= (w.start + torch.arange(n))[:, None]
        o = F.scaled_dot_product_attention(qs, k, v, attn_mask=mask, scale=scale)
        outs.append(o.transpose(0, 1).reshape(n, -1))
        row += n
    return torch.cat(outs)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_triton_paged_kernel_equals_attention_over_gathered_blocks(interpreted_triton, kv_heads):
    from kpt.serve._triton_attention import triton_paged_attention

    torch.manual_seed(0)
    bs, heads, dim, blocks = 16, 4, 16, 12
    k_cache = torch.randn(blocks, bs, kv_heads, dim)
    v_cache = torch.randn(blocks, bs, kv_heads, dim)
    work = [
        SeqWork([1] * 20, start=0, block_table=[4, 9], num_samples=1),  # a prompt
        SeqWork([1], start=70, block_table=[0, 2, 5, 7, 11], num_samples=1),  # a decode
        SeqWork([1] * 3, start=30, block_table=[3, 6, 8], num_samples=3),  # drafts
    ]
    b = build_step(work, bs)
    q = torch.randn(b.num_tokens, heads, dim)
    t = torch.from_numpy
    out = triton_paged_attention(
        q,
        k_cache,
        v_cache,
        t(b.block_tables),
        t(b.seq_lens),
        t(b.query_start),
        t(b.qblock_seq),
        t(b.qblock_index),
        1 / math.sqrt(dim),
    )
    expected = _reference_attention(q, k_cache, v_cache, work, bs, 1 / math.sqrt(dim))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_triton_attention_and_padded_graph_buffers_equal_transformers(
    interpreted_triton, model, gpt2_dir, tmp_path
):
    from conftest import make_llama

    # head size 16: the kernel's smallest
    model_dir = gpt2_dir if model == "gpt2" else make_llama(tmp_path / "m", width=64, heads=4)
    prompts = random_prompts(5, 1, 40, seed=33)
    reference = hf_greedy(model_dir, prompts, 6)
    llm = LLM(
        model_dir,
        device="cpu",
        num_kv_blocks=64,
        attention="triton",
        cuda_graphs=True,  # on the CPU: the padded fixed buffers, run eagerly
        max_num_batched_tokens=48,  # prompt chunks next to decodes
        async_decode=model == "gpt2",  # chained steps feed ids into the fixed buffers
    )
    assert llm.engine.runner.graphs is not None
    outs = llm.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == reference
    assert llm.engine.runner.graphs.replays > 0
    if model == "gpt2":
        assert llm.engine.chain.chained_steps > 0
    assert llm.engine.stats().kv_blocks_used == 0


def test_triton_needs_a_power_of_two_head_size(tmp_path):
    pytest.importorskip("triton")
    model_dir = make_gpt2(tmp_path / "m", width=48, heads=4)  # head size 12
    with pytest.raises(ValueError, match="power-of-two head size"):
        LLM(model_dir, device="cpu", num_kv_blocks=8, attention="triton")


def test_draft_model_speculation_equals_greedy(gpt2_dir, tmp_path):
    # A draft that is the target itself agrees on every token; a different random model
    # mostly disagrees. Both must leave the outputs equal to plain greedy decoding.
    other = make_gpt2(tmp_path / "draft", layers=1, seed=7)
    prompts = random_prompts(6, 2, 30, seed=41)
    params = SamplingParams(max_tokens=14, temperature=0.0, ignore_eos=True)
    reference = hf_greedy(gpt2_dir, prompts, 14)
    for draft, agrees in ((gpt2_dir, True), (other, False)):
        llm = LLM(
            gpt2_dir,
            device="cpu",
            num_kv_blocks=64,
            speculative_model=str(draft),
            speculative_tokens=3,
            max_num_batched_tokens=40,
        )
        outs = llm.generate(prompts, params)
        assert [o.token_ids for o in outs] == reference
        stats = llm.engine.stats()
        assert stats.draft_tokens_proposed > 0
        assert stats.kv_blocks_used == 0
        if agrees:
            assert stats.draft_acceptance_rate == 1.0
            assert stats.num_steps < 14


def test_draft_model_must_share_the_vocabulary(gpt2_dir, tmp_path):
    import transformers

    config = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "d")
    with pytest.raises(ValueError, match="vocabulary of 50"):
        LLM(gpt2_dir, device="cpu", speculative_model=str(tmp_path / "d"), speculative_tokens=2)
    with pytest.raises(ValueError, match="needs speculative_tokens"):
        LLM(gpt2_dir, device="cpu", speculative_model=str(gpt2_dir))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_graphs_give_the_tokens_of_the_cpu_engine(gpt2_dir):
    prompts = random_prompts(24, 1, 60, seed=51)
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    cpu = LLM(gpt2_dir, device="cpu", num_kv_blocks=256).generate(prompts, params)
    gpu = LLM(gpt2_dir, device="cuda", num_kv_blocks=256, dtype=torch.float32)
    outs = gpu.generate(prompts, params)
    assert gpu.engine.runner.graphs is not None and gpu.engine.runner.graphs.num_graphs > 0
    assert [o.token_ids for o in outs] == [o.token_ids for o in cpu]
    assert np.all([o.finished for o in outs])
