"""Chained decode steps (the next launched before this one's tokens are read): same tokens."""

from __future__ import annotations

from conftest import hf_greedy, random_prompts

from kpt.serve import LLM, SamplingParams

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


def test_chained_steps_give_the_tokens_of_transformers(gpt2_dir):
    prompts = random_prompts(16, 1, 50, seed=61)
    reference = hf_greedy(gpt2_dir, prompts, 12)
    # A small budget spreads prompts over steps: chains start, give way to admissions, resume.
    llm = LLM(
        gpt2_dir, device="cpu", num_kv_blocks=128, async_decode=True, max_num_batched_tokens=64
    )
    outs = llm.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == reference
    assert llm.engine.chain.chained_steps > 0
    stats = llm.engine.stats()
    assert stats.kv_blocks_used == 0
    assert stats.generated_tokens == 16 * 12


def test_stop_tokens_found_a_step_late_add_no_tokens(gpt2_dir):
    prompts = random_prompts(8, 3, 20, seed=62)
    plain = LLM(gpt2_dir, device="cpu", num_kv_blocks=64)
    first = plain.generate(prompts, GREEDY)
    # Stop on a token each request makes mid-way (varied lengths), and at EOS.
    stops = sorted({o.token_ids[5] for o in first})
    params = SamplingParams(max_tokens=12, temperature=0.0, stop_token_ids=stops)
    expected = [o.token_ids for o in plain.generate(prompts, params)]
    chained = LLM(gpt2_dir, device="cpu", num_kv_blocks=64, async_decode=True)
    outs = chained.generate(prompts, params)
    assert [o.token_ids for o in outs] == expected
    assert any(len(t) < 12 for t in expected)
    assert chained.engine.stats().kv_blocks_used == 0


def test_abort_and_streaming_while_a_step_is_in_flight(gpt2_dir):
    llm = LLM(gpt2_dir, device="cpu", num_kv_blocks=64, async_decode=True)
    engine = llm.engine
    ids = [engine.add_request(p, GREEDY) for p in random_prompts(4, 4, 10, seed=63)]
    seen: dict[str, list[int]] = {i: [] for i in ids}
    for _ in range(4):
        for out in engine.step():
            seen[out.request_id].extend(out.new_token_ids)
    assert engine.chain.inflight is not None
    aborted = engine.abort(ids[0])
    assert aborted is not None and aborted.finish_reason == "abort"
    finals = {}
    while engine.has_unfinished:
        for out in engine.step():
            assert out.request_id != ids[0], "an aborted request emits nothing more"
            seen[out.request_id].extend(out.new_token_ids)
            if out.finished:
                finals[out.request_id] = out.token_ids
    assert sorted(finals) == sorted(ids[1:])
    assert all(seen[i] == finals[i] and len(finals[i]) == 12 for i in ids[1:])
    assert engine.stats().kv_blocks_used == 0


def test_blocks_filled_by_chained_steps_are_named_for_prefix_hits(gpt2_dir):
    # Chained steps append most tokens inline and name a block only when one fills: every
    # block the decode filled must still be found by a later request that shares it.
    llm = LLM(gpt2_dir, device="cpu", num_kv_blocks=64, async_decode=True)
    prompt = random_prompts(1, 20, 20, seed=64)[0]
    first = llm.generate(prompt, SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
    assert llm.engine.chain.chained_steps > 0
    # 20 prompt tokens + 39 computed outputs: three full blocks of 16, two filled in decode.
    follow_up = prompt + first[0].token_ids[:44]
    second = llm.generate(follow_up, SamplingParams(max_tokens=2, temperature=0.0))
    assert second[0].num_cached_tokens == 48
