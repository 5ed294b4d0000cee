"""n-gram speculative decoding: the same tokens as plain greedy decoding, fewer steps."""

from __future__ import annotations

import pytest
from conftest import hf_greedy, random_prompts

from kpt.serve import LLM, SamplingParams


@pytest.mark.parametrize("model", ["gpt2_dir", "llama_dir"])
def test_speculative_outputs_equal_greedy_and_drafts_get_accepted(model, request):
    model_dir = request.getfixturevalue(model)
    # Repetitive prompts, so that prompt lookup finds drafts (random tiny models also tend
    # to fall into loops, which drafts then predict).
    prompts = [p * 3 for p in random_prompts(6, 3, 8, seed=21)] + random_prompts(4, 5, 30, seed=22)
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    reference = hf_greedy(model_dir, prompts, 24)
    plain = LLM(model_dir, device="cpu", num_kv_blocks=128)
    spec = LLM(model_dir, device="cpu", num_kv_blocks=128, speculative_tokens=4)
    assert [o.token_ids for o in plain.generate(prompts, params)] == reference
    assert [o.token_ids for o in spec.generate(prompts, params)] == reference
    stats, plain_stats = spec.engine.stats(), plain.engine.stats()
    assert stats.draft_tokens_accepted > 0
    assert 0 < stats.draft_acceptance_rate <= 1
    assert stats.num_steps < plain_stats.num_steps
    assert stats.kv_blocks_used == 0


def test_speculative_with_a_tight_budget_and_sampled_neighbours(gpt2_dir):
    prompts = [p * 4 for p in random_prompts(5, 2, 6, seed=23)]
    reference = hf_greedy(gpt2_dir, prompts, 16)
    llm = LLM(
        gpt2_dir, device="cpu", num_kv_blocks=24, speculative_tokens=5, max_num_batched_tokens=8
    )
    greedy = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    sampled = SamplingParams(max_tokens=16, temperature=1.0, seed=3, ignore_eos=True)
    outs = llm.generate(prompts + prompts[:2], [greedy] * len(prompts) + [sampled] * 2)
    assert [o.token_ids for o in outs[: len(prompts)]] == reference
    assert all(len(o.token_ids) == 16 for o in outs)
    assert llm.engine.stats().kv_blocks_used == 0
