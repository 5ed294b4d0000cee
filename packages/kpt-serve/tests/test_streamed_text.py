"""Output text grows a token at a time (tokenizers' DecodeStream), not decoded whole each step:
it only ever grows, and a finished output's text is the whole decode of its tokens."""

from __future__ import annotations

import pytest
import torch

from kpt.serve import LLM, SamplingParams

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

CORPUS = [
    "Héllo wörld, ça va? 日本語のテキスト 🙂🙃 naïve café",
    "emoji 🚀🔥 and ümlauts äöü ß",
] * 40


def byte_level_model(folder):
    """A byte-level BPE tokenizer (GPT-2's kind: characters split across tokens) and a random
    GPT-2 over its whole vocabulary."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet))
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=128, n_embd=32, n_layer=1, n_head=2
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    tok.save(str(folder / "tokenizer.json"))
    return tok


def test_streamed_text_only_grows_and_ends_as_the_whole_decode(tmp_path):
    tok = byte_level_model(tmp_path)
    llm = LLM(tmp_path, device="cpu", num_kv_blocks=32)
    params = SamplingParams(max_tokens=60, temperature=1.0, seed=3, ignore_eos=True)
    texts, held_back = [], 0
    for out in llm.stream("Héllo 🙂", params):
        if texts:
            assert out.text.startswith(texts[-1]), (texts[-1], out.text)
        texts.append(out.text)
        whole = tok.decode(out.token_ids, skip_special_tokens=True)
        if out.finished:
            assert out.text == whole
        else:
            assert whole.startswith(out.text)
            held_back += out.text != whole  # a character still split across tokens
    assert len(texts) == 60
    assert held_back > 0  # the sampled bytes did split characters: the case was exercised


def test_a_stop_string_is_found_in_the_streamed_text(tmp_path):
    byte_level_model(tmp_path)
    llm = LLM(tmp_path, device="cpu", num_kv_blocks=32)
    free = llm.generate("Héllo", SamplingParams(max_tokens=40, temperature=1.0, seed=5))[0]
    stop = free.text[10:13]
    assert len(stop) == 3
    out = llm.generate("Héllo", SamplingParams(max_tokens=40, temperature=1.0, seed=5, stop=[stop]))
    assert out[0].finish_reason == "stop"
    assert out[0].text == free.text[: free.text.find(stop)]
