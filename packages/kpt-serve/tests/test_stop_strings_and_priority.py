"""Stop strings and preemption by priority, against transformers."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import VOCAB, hf_greedy, random_prompts

from kpt.serve import LLM, Engine, EngineConfig, SamplingParams

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def _char(i: int) -> str:
    return chr(33 + i)  # printable, no spaces: '!' for token 0, '"' for 1, ...


@pytest.fixture(scope="module")
def text_model(gpt2_dir, tmp_path_factory):
    """The tiny GPT-2 with a character tokenizer (token i is one printable character), so
    that any text tokenizes, as transformers' stop_strings needs."""
    folder = tmp_path_factory.mktemp("with-tokenizer") / "m"
    shutil.copytree(gpt2_dir, folder)
    vocab = {_char(i): i for i in range(VOCAB)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token=_char(0)))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex("."), behavior="isolated")
    tok.decoder = tokenizers.decoders.Fuse()  # characters joined as they are
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_stop_strings_end_where_transformers_stop_strings_do(text_model):
    prompts = random_prompts(8, 3, 12, seed=71)
    full = hf_greedy(text_model, prompts, 16)
    # For each prompt, the text of two generated tokens mid-way that does not occur before
    # (transformers also looks across the prompt's end; the engine, like vLLM, at the output).
    # (Tiny random models repeat themselves: a prompt whose output has no such pair is left out.)
    cases = []
    for prompt, tokens in zip(prompts, full, strict=True):
        text = _char(prompt[-1]) + "".join(_char(t) for t in tokens)
        fresh = [i for i in range(2, 15) if text[i : i + 2] not in text[: i + 1]]
        if fresh:
            cases.append((prompt, text[fresh[0] : fresh[0] + 2]))
    assert len(cases) >= 3
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(text_model / "tokenizer.json"))
    model = transformers.AutoModelForCausalLM.from_pretrained(text_model, dtype=torch.float32)
    llm = LLM(text_model, device="cpu", num_kv_blocks=64)
    for prompt, stop in cases:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=16,
                do_sample=False,
                stop_strings=[stop],
                tokenizer=hf_tok,
                pad_token_id=0,
                eos_token_id=None,
            )
        expected = gen[0, len(prompt) :].tolist()
        params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, stop=stop)
        out = llm.generate([prompt], params)[0]
        assert out.token_ids == expected
        assert len(expected) < 16 and out.finish_reason == "stop"
        text = "".join(_char(t) for t in out.token_ids)
        assert text.endswith(stop) and out.text == text[: -len(stop)]
    assert llm.engine.stats().kv_blocks_used == 0


def test_stop_strings_need_a_tokenizer_and_text(gpt2_dir):
    llm = LLM(gpt2_dir, device="cpu", num_kv_blocks=16)
    with pytest.raises(ValueError, match=r"need the model folder's tokenizer\.json"):
        llm.generate([[3, 4]], SamplingParams(stop=["w1"]))
    with pytest.raises(ValueError, match="must be non-empty strings"):
        SamplingParams(stop=[""])


def test_an_urgent_request_preempts_a_running_one_of_worse_priority(gpt2_dir):
    prompts = random_prompts(3, 10, 30, seed=72)
    reference = hf_greedy(gpt2_dir, prompts, 10)
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    engine = Engine(gpt2_dir, "cpu", EngineConfig(num_kv_blocks=64, max_num_seqs=2))
    low = [engine.add_request(p, params, priority=5) for p in prompts[:2]]
    for _ in range(3):
        engine.step()  # both low-priority requests are decoding, every seat taken
    urgent = engine.add_request(prompts[2], params, priority=0)
    first = engine.step()  # the urgent one takes the seat of the latest low-priority one
    assert urgent in {o.request_id for o in first}
    assert engine.stats().num_preemptions == 1
    finished, tokens = [], {}
    while engine.has_unfinished:
        for out in engine.step():
            if out.finished:
                finished.append(out.request_id)
                tokens[out.request_id] = out.token_ids
    assert finished.index(urgent) < finished.index(low[1])
    assert [tokens[r] for r in [*low, urgent]] == reference
    assert engine.stats().kv_blocks_used == 0


def test_equal_priorities_never_preempt_for_a_seat(gpt2_dir):
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    engine = Engine(gpt2_dir, "cpu", EngineConfig(num_kv_blocks=64, max_num_seqs=1))
    first = engine.add_request([5, 6, 7], params)
    engine.step()
    engine.add_request([8, 9], params)
    done = []
    while engine.has_unfinished:
        done += [o.request_id for o in engine.step() if o.finished]
    assert done[0] == first and engine.stats().num_preemptions == 0
