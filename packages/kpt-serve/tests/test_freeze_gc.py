"""freeze_gc: the engine freezes the collector's heap once started, and still frees when dropped.

A frozen object in a reference cycle is never collected, so every engine path (the decode
chain, the padded step buffers, a draft model) must free by reference counting alone.
"""

from __future__ import annotations

import gc
import weakref

import pytest
from conftest import make_gpt2, random_prompts

from kpt.serve import LLM, SamplingParams

PATHS = {
    "plain": {},
    "chained decode": {"async_decode": True},
    "padded step buffers": {"cuda_graphs": True, "attention": "triton"},
    "draft model": {"speculative_tokens": 2},
}


@pytest.fixture
def collector_restored():
    """The test freezes the whole process's heap: give it back to the collector after."""
    yield
    gc.unfreeze()
    gc.enable()


@pytest.mark.parametrize("path", PATHS)
def test_a_frozen_engine_is_freed_by_reference_counting_alone(
    gpt2_dir, tmp_path, path, collector_restored
):
    options = dict(PATHS[path])
    if path == "draft model":
        options["speculative_model"] = str(make_gpt2(tmp_path / "draft", layers=1, seed=7))
    llm = LLM(gpt2_dir, device="cpu", num_kv_blocks=32, freeze_gc=True, **options)
    assert gc.get_freeze_count() > 0  # the heap of the libraries is out of the collector's way
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    outs = llm.generate(random_prompts(3, 4, 12, seed=3), params)
    assert all(len(o.token_ids) == 6 for o in outs)
    engine = llm.engine
    held = [weakref.ref(x) for x in (llm, engine, engine.runner, engine.runner.model)]
    del llm, engine
    gc.disable()  # nothing but reference counting may free it
    assert [ref() is None for ref in held] == [True] * len(held)


def test_freeze_gc_off_leaves_the_heap_to_the_collector(gpt2_dir, collector_restored):
    gc.unfreeze()
    LLM(gpt2_dir, device="cpu", num_kv_blocks=8, freeze_gc=False)
    assert gc.get_freeze_count() == 0
    LLM(gpt2_dir, device="cpu", num_kv_blocks=8)  # None: only on CUDA
    assert gc.get_freeze_count() == 0
