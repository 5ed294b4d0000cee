"""load_format="dummy": random weights made on the device from config.json alone."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import make_gpt2, make_llama

from kpt.serve import LLM, SamplingParams
from kpt.serve._config import load_config
from kpt.serve._loader import checkpoint_bytes, model_bytes
from kpt.serve.fleet._model_set import footprint_bytes

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)


@pytest.fixture(params=[make_gpt2, make_llama], ids=["gpt2", "llama"])
def config_only(request, tmp_path):
    """A model folder holding config.json and no weights, and the checkpoint it came from."""
    saved = request.param(tmp_path / "saved", layers=2, width=32)
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(saved / "config.json", folder)
    return folder, saved


def test_sizes_from_the_config_equal_the_checkpoint(config_only):
    folder, saved = config_only
    for dtype in (torch.float32, torch.bfloat16):
        assert model_bytes(load_config(folder), dtype) == checkpoint_bytes(saved, dtype)


def test_a_fleet_worker_sizes_a_folder_without_weights_from_its_config(config_only):
    # A worker's ModelSet reserves room for each model before loading it: for a folder served
    # with load_format "dummy" the weights' size comes from config.json (the same bytes).
    folder, saved = config_only
    for blocks in (0, 8):
        assert footprint_bytes(folder, torch.bfloat16, blocks) == footprint_bytes(
            saved, torch.bfloat16, blocks
        )


def test_a_folder_without_weights_serves_dummy_ones_reproducibly(config_only):
    folder, _ = config_only
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        LLM(folder, device="cpu", num_kv_blocks=8)
    prompts = [[3, 4, 5, 6], [7, 8]]
    runs = [
        LLM(folder, device="cpu", num_kv_blocks=8, load_format="dummy", seed=seed)
        for seed in (0, 0, 1)
    ]
    outs = [[o.token_ids for o in llm.generate(prompts, GREEDY)] for llm in runs]
    assert outs[0] == outs[1]  # the same seed makes the same weights
    weights = [dict(llm.engine.runner.model.named_parameters()) for llm in runs]
    assert all(torch.isfinite(p).all() for p in weights[0].values())
    assert any(not torch.equal(weights[0][n], weights[2][n]) for n in weights[0])
    norms = [p for n, p in weights[0].items() if p.dim() == 1 and "bias" not in n]
    assert norms and all(torch.all(p == 1) for p in norms)


def test_an_unknown_load_format_is_refused():
    with pytest.raises(ValueError, match="load_format='npz' must be 'safetensors'"):
        from kpt.serve import EngineConfig

        EngineConfig(load_format="npz")
