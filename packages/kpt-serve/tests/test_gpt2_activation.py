"""GPT-2's activation_function: a model trained with torch's exact GELU serves as it trained."""

import json

import pytest
import torch
import transformers
from conftest import hf_greedy, make_gpt2, random_prompts

from kpt.serve import LLM, SamplingParams
from kpt.serve._config import load_config
from kpt.serve._models import _Gpt2Mlp

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("activation", ["gelu", "gelu_new"])
def test_greedy_tokens_equal_transformers_for_each_activation(tmp_path, activation):
    # Wide enough, with large weights, that the two GELUs pick different tokens somewhere.
    folder = make_gpt2(tmp_path / activation, width=64, seed=3, activation=activation)
    prompts = random_prompts(6, 4, 24, seed=5)
    want = hf_greedy(folder, prompts, 12)
    llm = LLM(folder, device="cpu", num_kv_blocks=64)
    got = llm.generate(prompts, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    assert [out.token_ids for out in got] == want


@pytest.mark.parametrize("activation", ["gelu", "gelu_new"])
def test_the_mlp_computes_what_transformers_computes(tmp_path, activation):
    # The two GELUs differ by at most ~5e-4: too little to flip a greedy token reliably, plenty
    # to see in the MLP's output for inputs of a few units.
    folder = make_gpt2(tmp_path / activation, activation=activation)
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).transformer.h[0].mlp
    mine = _Gpt2Mlp(load_config(folder))
    with torch.no_grad():
        mine.c_fc.weight.copy_(hf.c_fc.weight.t() * 50)
        mine.c_fc.bias.copy_(hf.c_fc.bias)
        mine.c_proj.weight.copy_(hf.c_proj.weight.t())
        mine.c_proj.bias.copy_(hf.c_proj.bias)
        hf.c_fc.weight.mul_(50)  # pre-activations of a few units, where the GELUs part
        x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(mine(x), hf(x), rtol=0, atol=2e-6)


def test_an_activation_the_engine_does_not_run_is_refused_by_name(tmp_path):
    folder = make_gpt2(tmp_path / "m", activation="gelu_new")
    config = json.loads((folder / "config.json").read_text())
    config["activation_function"] = "swish"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="activation_function 'swish'"):
        LLM(folder, device="cpu", num_kv_blocks=16)
