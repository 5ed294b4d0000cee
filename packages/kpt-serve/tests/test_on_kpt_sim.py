"""The engine unchanged on the simulated device: same tokens as transformers, virtual time."""

from __future__ import annotations

import pytest
from conftest import hf_greedy, make_gpt2, make_llama, random_prompts

from kpt.serve import LLM, SamplingParams

sim = pytest.importorskip("kpt.adapters.sim")


@pytest.mark.parametrize("make", [make_gpt2, make_llama], ids=["gpt2", "llama-gqa"])
def test_greedy_tokens_equal_transformers_on_kpt_sim(make, tmp_path):
    model_dir = make(tmp_path / "model", layers=1, width=32)
    prompts = random_prompts(4, 3, 24, seed=11)
    reference = hf_greedy(model_dir, prompts, 5)
    # A 16-token budget mixes prompt chunks with decodes in the same steps.
    llm = LLM(model_dir, device="kpt_sim", num_kv_blocks=16, max_num_batched_tokens=16)
    outs = llm.generate(prompts, SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    assert [o.token_ids for o in outs] == reference
    stats = llm.engine.stats()
    assert stats.kv_blocks_used == 0
    # Times come from the simulated chip's clock; every op ran on the device, none fell back.
    assert all(0 < o.ttft_ms < o.latency_ms for o in outs)
    assert stats.clock_ms > 0
    assert not {op for op in sim.fallback_report() if "index" in op or "attention" in op}
