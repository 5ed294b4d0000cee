"""Quantized variants on kpt_sim: layers computed as on the CPU, the engine's tokens, and the
simulated time a quantized decode step saves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import make_llama, random_prompts
from torch import nn

from kpt.serve import LLM, SamplingParams
from kpt.serve._quantize import ActivationQuantizer, QuantizedLinear

sim = pytest.importorskip("kpt.adapters.sim")


@pytest.mark.parametrize("method", ["int8", "fp8"])
def test_quantized_layers_on_kpt_sim_equal_the_reference(method):
    """kpt_sim computes a quantized GEMM from its definition, as the CPU reference does."""
    import kpt.hal as hal

    if method == "fp8" and "fp8" not in hal.device("kpt_sim").capabilities.features:
        pytest.skip("this kpt_sim profile has no float8 rate")
    device = torch.device("kpt_sim")
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, dtype=torch.bfloat16)
    on_sim = QuantizedLinear(linear, method, torch.bfloat16, device)
    on_sim.load_weight(linear.weight)
    on_sim.bias = nn.Parameter(linear.bias.detach().to(device))
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    got = on_sim(x.to(device)).cpu().float()
    w = on_sim.weight.cpu().float()
    if method == "int8":
        expected = (x @ w.to(torch.bfloat16).t()).float() * on_sim.weight_scale.cpu().float()
    else:
        quantized, top = ActivationQuantizer()(x, x, on_sim.weight.dtype)
        expected = (quantized.float() * top) @ (w * on_sim.weight_scale.cpu()).t()
    expected = expected + linear.bias.float()
    assert torch.allclose(got, expected, rtol=2e-2, atol=2e-2)
    assert (got - linear(x).float()).abs().max() < 0.1 * linear(x).float().abs().max()
    assert not sim.fallback_report()


def test_int8_engine_on_kpt_sim_gives_the_cpu_tokens(tmp_path):
    model_dir = make_llama(tmp_path / "llama", layers=2, width=64)
    prompts = random_prompts(4, 5, 12, seed=1)
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    options = {"num_kv_blocks": 32, "quantization": "int8", "dtype": torch.bfloat16}
    cpu = LLM(model_dir, device="cpu", **options).generate(prompts, params)
    simulated = LLM(model_dir, device="kpt_sim", **options).generate(prompts, params)
    assert [o.token_ids for o in simulated] == [o.token_ids for o in cpu]


DECODE = """
import json, sys, torch
import kpt.adapters.sim
from kpt.serve import LLM, SamplingParams
out = {}
for method in (None, "int8", "fp8"):
    llm = LLM(sys.argv[1], device="kpt_sim", dtype=torch.bfloat16, load_format="dummy",
              num_kv_blocks=16, max_num_seqs=1, max_model_len=128, quantization=method)
    params = SamplingParams(max_tokens=9, temperature=0.0, ignore_eos=True)
    o = llm.generate([[5, 6, 7, 8]], params)[0]
    out[str(method)] = (o.latency_ms - o.ttft_ms) / 8
print(json.dumps(out))
"""


@pytest.mark.timeout(300)
def test_quantized_decoding_is_faster_by_the_weight_bytes_it_saves(tmp_path):
    """Timing-only, on an h100-sxm profile: a decode step of one sequence reads every weight
    once, so int8 saves about its halved linear weights over the HBM bandwidth."""
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 2, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 1024, "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "KPT_SIM_NUMERICS": "0", "KPT_SIM_PROFILE": "h100-sxm",
           "KPT_SIM_DEVICES": "1"}  # fmt: skip
    env.pop("KPT_SIM_ENDPOINT", None)  # its own embedded daemon, timing only
    done = subprocess.run([sys.executable, "-c", DECODE, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=280)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    tpot = json.loads(done.stdout.strip().splitlines()[-1])
    per_layer = 4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14336  # linear weights
    saved_ms = 2 * per_layer / 3.35e12 * 1e3  # one byte each fewer, at 3.35 TB/s
    # At the datasheet's bandwidth at best, at half of it at worst (GEMMs reach 60-90 %).
    assert saved_ms < tpot["None"] - tpot["int8"] < 2 * saved_ms
    # fp8 saves the same bytes but quantizes activations first (3 small launches per input).
    assert tpot["int8"] < tpot["fp8"] < tpot["None"]
