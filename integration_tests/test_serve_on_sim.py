"""kpt-serve engines on a shared simulator daemon: one per chip, same tokens, own clocks."""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("kpt.serve")

ENGINE = """
import json, kpt.adapters.sim
from kpt.serve import LLM, SamplingParams
llm = LLM({model_dir!r}, device="kpt_sim", num_kv_blocks=16, max_num_batched_tokens=16)
prompts = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], [30, 31, 32]]
outs = llm.generate(prompts, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
stats = llm.engine.stats()
print(json.dumps({{
    "tokens": [o.token_ids for o in outs],
    "ttft_ms": [o.ttft_ms for o in outs],
    "device": llm.engine.device_info.capabilities.model,
    "blocks_used": stats.kv_blocks_used,
}}))
"""


def test_engines_on_two_chips_of_one_daemon(daemon, spawn, tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    code = ENGINE.format(model_dir=str(tmp_path / "model"))
    # One engine process per chip (h100-sxm is daemon device 0, mi300x device 1), at once.
    children = [spawn(code, daemon, KPT_SIM_VISIBLE_DEVICES=str(i)) for i in (0, 1)]
    h100, mi300x = (json.loads(child.result().strip().splitlines()[-1]) for child in children)
    with torch.no_grad():
        reference = [
            model.generate(torch.tensor([p]), max_new_tokens=4, min_new_tokens=4, do_sample=False)[
                0, len(p) :
            ].tolist()
            for p in ([5, *range(6, 23)], [30, 31, 32])
        ]
    assert h100["tokens"] == mi300x["tokens"] == reference
    assert h100["blocks_used"] == mi300x["blocks_used"] == 0
    assert h100["device"] != mi300x["device"]
    assert all(t > 0 for t in h100["ttft_ms"] + mi300x["ttft_ms"])
