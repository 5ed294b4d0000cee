"""Greedy outputs of the engine equal transformers' generate, token for token (fp32, CPU)."""

from __future__ import annotations

import pytest
from conftest import hf_greedy, random_prompts

from kpt.serve import LLM, SamplingParams

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


def _check(llm, prompts, reference, params=GREEDY):
    outs = llm.generate(prompts, params)
    assert [o.token_ids for o in outs] == reference
    assert all(o.finished and o.finish_reason == "length" for o in outs)
    stats = llm.engine.stats()
    assert stats.kv_blocks_used == 0, "every block goes back to the pool"
    return stats


@pytest.fixture(scope="module")
def gpt2_case(gpt2_dir):
    prompts = random_prompts(64, 1, 60, seed=1)
    return gpt2_dir, prompts, hf_greedy(gpt2_dir, prompts, 12)


@pytest.fixture(scope="module")
def llama_case(llama_dir):
    prompts = random_prompts(24, 1, 60, seed=2)
    return llama_dir, prompts, hf_greedy(llama_dir, prompts, 12)


def test_gpt2_64_concurrent_requests_of_different_lengths(gpt2_case):
    model_dir, prompts, reference = gpt2_case
    llm = LLM(model_dir, device="cpu", num_kv_blocks=512)
    stats = _check(llm, prompts, reference)
    assert stats.num_preemptions == 0
    # All 64 ran together: one prefill step (budget 2048 holds every prompt), then decodes.
    assert stats.num_steps == 12


def test_llama_with_grouped_query_attention(llama_case):
    model_dir, prompts, reference = llama_case
    llm = LLM(model_dir, device="cpu", num_kv_blocks=256)
    assert llm.engine.model_config.num_kv_heads < llm.engine.model_config.num_heads
    _check(llm, prompts, reference)


@pytest.mark.parametrize("case", ["gpt2_case", "llama_case"])
def test_chunked_prefill_gives_the_same_tokens(case, request):
    model_dir, prompts, reference = request.getfixturevalue(case)
    # A 24-token budget splits most prompts over several steps, next to other requests' decodes.
    llm = LLM(model_dir, device="cpu", num_kv_blocks=512, max_num_batched_tokens=24)
    stats = _check(llm, prompts, reference)
    assert stats.num_steps > 12 + sum(len(p) for p in prompts) // 24 - 1


@pytest.mark.parametrize("case", ["gpt2_case", "llama_case"])
def test_preemption_when_the_pool_is_full_recomputes_the_same_tokens(case, request):
    model_dir, prompts, reference = request.getfixturevalue(case)
    # 12 blocks of 16 tokens hold a few sequences at once: the rest wait, some get preempted.
    llm = LLM(model_dir, device="cpu", num_kv_blocks=12, prefix_caching=False)
    stats = _check(llm, prompts, reference)
    assert stats.num_preemptions > 0


def test_prefix_cache_hits_give_the_same_tokens(gpt2_dir):
    shared = random_prompts(1, 40, 40, seed=3)[0]
    prompts = [shared + tail for tail in random_prompts(8, 1, 20, seed=4)]
    reference = hf_greedy(gpt2_dir, prompts, 12)
    llm = LLM(gpt2_dir, device="cpu", num_kv_blocks=128)
    first = llm.generate(prompts[:1], GREEDY)
    assert first[0].num_cached_tokens == 0
    outs = llm.generate(prompts[1:], GREEDY)
    assert [first[0].token_ids] + [o.token_ids for o in outs] == reference
    # 40 shared tokens are two full blocks of 16, found for every later prompt.
    assert all(o.num_cached_tokens == 32 for o in outs)
    stats = llm.engine.stats()
    assert 0.0 < stats.prefix_hit_rate < 1.0
    assert stats.kv_blocks_used == 0


def test_the_same_prompt_twice_reuses_everything_but_its_last_token(gpt2_dir):
    prompt = random_prompts(1, 48, 48, seed=5)[0]  # exactly three blocks
    llm = LLM(gpt2_dir, device="cpu", num_kv_blocks=64)
    a = llm.generate([prompt], GREEDY)[0]
    b = llm.generate([prompt], GREEDY)[0]
    assert a.token_ids == b.token_ids == hf_greedy(gpt2_dir, [prompt], 12)[0]
    # At least one token is recomputed for logits, so the third block is not reused.
    assert b.num_cached_tokens == 32


def test_a_request_that_ends_at_its_first_token_still_caches_its_prompt(gpt2_dir):
    prompt = random_prompts(1, 40, 40, seed=6)[0]  # two full blocks and 8 tokens
    llm = LLM(gpt2_dir, device="cpu", num_kv_blocks=64)
    one = SamplingParams(max_tokens=1, temperature=0.0)
    llm.generate([prompt], one)  # its only step computes the prompt and finishes it
    again = llm.generate([[*prompt, 5]], GREEDY)[0]
    assert again.num_cached_tokens == 32
    assert again.token_ids == hf_greedy(gpt2_dir, [[*prompt, 5]], 12)[0]
