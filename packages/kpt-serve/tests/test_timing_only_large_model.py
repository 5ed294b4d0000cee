"""In timing-only mode a simulated chip serves a model far larger than this machine's memory:
a Llama-70B-shaped model (141 GB of bf16 weights, made on the device by load_format="dummy")
on a simulated MI300X, in a process that stays under 2 GB."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("kpt.adapters.sim")

LLAMA_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
}

CHILD = """
import json, resource, sys
import torch
import kpt.adapters.sim
from kpt.serve import LLM, SamplingParams
from kpt.serve._config import load_config
from kpt.serve._loader import model_bytes
llm = LLM(sys.argv[1], device="kpt_sim", load_format="dummy", num_kv_blocks=16, max_num_seqs=2,
          max_model_len=256)
out = llm.generate([[5, 6, 7, 8] * 4], SamplingParams(max_tokens=2, temperature=0.0,
                                                      ignore_eos=True))[0]
print(json.dumps({
    "weights": model_bytes(load_config(sys.argv[1]), torch.bfloat16),
    "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "tokens": len(out.token_ids), "ttft_ms": out.ttft_ms, "latency_ms": out.latency_ms,
}))
"""


@pytest.mark.timeout(600)
def test_a_70b_model_runs_timing_only_in_a_small_process(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_70B))
    env = {**os.environ, "KPT_SIM_NUMERICS": "0", "KPT_SIM_PROFILE": "mi300x",
           "KPT_SIM_DEVICES": "1"}  # fmt: skip
    env.pop("KPT_SIM_ENDPOINT", None)  # its own embedded daemon, timing only
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["weights"] > 140e9  # more than this machine, or most machines, hold
    assert result["rss"] < 2e9
    assert result["tokens"] == 2
    # Simulated times of a 141 GB model: a decode step reads every weight once, so it takes
    # at least the weights over the MI300X's HBM bandwidth (5.3 TB/s datasheet).
    assert result["latency_ms"] - result["ttft_ms"] > result["weights"] / 5.3e12 * 1e3
