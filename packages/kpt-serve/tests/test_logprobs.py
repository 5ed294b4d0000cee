"""Log-probabilities equal transformers' log-softmax of the same positions, whatever the
scheduler did: chunked prefill, a shared prefix, speculative decoding, preemption, deltas."""

from __future__ import annotations

import pytest
import torch
from conftest import make_gpt2, make_llama, random_prompts, transformers

from kpt.serve import LLM, SamplingParams

TOP = 3


def hf_logprobs(model_dir, sequence):
    """[len(sequence), vocab] log-softmax of transformers' logits (row i scores token i + 1)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([sequence])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def check_entry(entry, token, row):
    """entry: {token: logprob, then the TOP most likely}; row: the reference log-softmax."""
    assert next(iter(entry)) == token
    assert entry[token] == pytest.approx(row[token].item(), abs=1e-4)
    best = row.topk(TOP).indices.tolist()
    assert set(best) <= set(entry)
    for t in best:
        assert entry[t] == pytest.approx(row[t].item(), abs=1e-4)


@pytest.mark.parametrize("make", [make_gpt2, make_llama], ids=["gpt2", "llama"])
def test_prompt_and_output_logprobs_equal_transformers(make, tmp_path):
    model_dir = make(tmp_path / "m", layers=2, width=32)
    prompts = random_prompts(5, 3, 40, seed=4)
    prompts[1] = prompts[0] + [7, 8, 9]  # shares the first prompt's blocks in the prefix cache
    params = SamplingParams(
        max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=TOP, prompt_logprobs=TOP
    )
    # 16-token budget: long prompts arrive in chunks, mixed with other requests' decodes.
    llm = LLM(model_dir, device="cpu", num_kv_blocks=64, max_num_batched_tokens=16)
    llm.generate(prompts[0], SamplingParams(max_tokens=2))  # fills the prefix cache
    for prompt, out in zip(prompts, llm.generate(prompts, params), strict=True):
        reference = hf_logprobs(model_dir, prompt + out.token_ids)
        assert out.prompt_logprobs[0] is None
        assert len(out.prompt_logprobs) == len(prompt)
        for i in range(1, len(prompt)):
            check_entry(out.prompt_logprobs[i], prompt[i], reference[i - 1])
        assert len(out.logprobs) == len(out.token_ids) == 6
        for j, token in enumerate(out.token_ids):
            check_entry(out.logprobs[j], token, reference[len(prompt) - 1 + j])
    assert llm.engine.stats().kv_blocks_used == 0


def test_speculative_tokens_and_preemption_keep_the_same_logprobs(tmp_path):
    model_dir = make_gpt2(tmp_path / "m", layers=2, width=32)
    prompts = [p * 3 for p in random_prompts(6, 4, 8, seed=5)]  # repeats: n-gram drafts hit
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, logprobs=TOP)
    plain = LLM(model_dir, device="cpu", num_kv_blocks=64).generate(prompts, params)
    spec = LLM(model_dir, device="cpu", num_kv_blocks=64, speculative_tokens=3)
    tight = LLM(model_dir, device="cpu", num_kv_blocks=8)  # too few blocks: preemption
    for llm in (spec, tight):
        outs = llm.generate(prompts, params)
        for a, b in zip(plain, outs, strict=True):
            assert a.token_ids == b.token_ids
            assert [list(e) for e in a.logprobs] == [list(e) for e in b.logprobs]
            for x, y in zip(a.logprobs, b.logprobs, strict=True):
                assert list(x.values()) == pytest.approx(list(y.values()), abs=1e-4)
    assert spec.engine.stats().draft_tokens_accepted > 0
    assert tight.engine.stats().num_preemptions > 0


def test_sampled_tokens_and_deltas(tmp_path):
    model_dir = make_gpt2(tmp_path / "m", layers=1, width=32)
    llm = LLM(model_dir, device="cpu", num_kv_blocks=32)
    params = SamplingParams(
        max_tokens=8, temperature=1.0, seed=3, ignore_eos=True, logprobs=0, prompt_logprobs=1
    )
    cumulative = list(llm.stream([5, 6, 7, 8], params))
    delta = list(
        llm.stream([5, 6, 7, 8], SamplingParams(**{**vars(params), "output_kind": "delta"}))
    )
    whole = cumulative[-1]
    assert all(len(e) == 1 for e in whole.logprobs)  # logprobs=0: the sampled token's own only
    reference = hf_logprobs(model_dir, [5, 6, 7, 8, *whole.token_ids])
    for j, token in enumerate(whole.token_ids):
        assert whole.logprobs[j][token] == pytest.approx(reference[3 + j][token].item(), abs=1e-4)
    assert [e for o in delta for e in o.logprobs] == whole.logprobs
    assert delta[0].prompt_logprobs == whole.prompt_logprobs
    assert all(o.prompt_logprobs is None for o in delta[1:])


def test_bad_logprob_counts_are_refused():
    for bad in (-1, 21, 2.5, True):
        with pytest.raises(ValueError, match="logprobs="):
            SamplingParams(logprobs=bad)
        with pytest.raises(ValueError, match="prompt_logprobs="):
            SamplingParams(prompt_logprobs=bad)
