"""Small random-weight models made with transformers' own classes, saved to tmp folders."""

from __future__ import annotations

import os

import pytest
import torch

# Without CUDA, Triton kernels run in its interpreter; the variable must be set before
# triton.language is first imported (its library functions are decorated at import).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

transformers = pytest.importorskip("transformers")

VOCAB = 96


def _save(model, path):
    model.save_pretrained(path, safe_serialization=True)
    return path


def make_gpt2(path, *, layers=2, width=64, heads=4, positions=256, seed=0, activation="gelu_new"):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        activation_function=activation,
        vocab_size=VOCAB,
        n_positions=positions,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        bos_token_id=0,
        eos_token_id=1,
    )
    return _save(transformers.GPT2LMHeadModel(config).eval(), path)


def make_llama(path, *, layers=2, width=64, heads=4, kv_heads=2, positions=256, seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=positions,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    return _save(transformers.LlamaForCausalLM(config).eval(), path)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return make_llama(tmp_path_factory.mktemp("llama"))


def hf_greedy(model_dir, prompts, max_new_tokens):
    """transformers' own greedy generate, one prompt at a time (no padding), EOS ignored."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    outs = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
            outs.append(gen[0, len(prompt) :].tolist())
    return outs


def random_prompts(count, low, high, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (count,), generator=gen).tolist()
    return [torch.randint(2, VOCAB, (n,), generator=gen).tolist() for n in lengths]
