"""SamplingParams.output_kind: every step's whole output, only what is new, or the final one.
All three tell the same story; the cheaper ones only leave out what the caller already has."""

from __future__ import annotations

import pytest

from kpt.serve import LLM, OutputKind, SamplingParams

pytest.importorskip("tokenizers")
from test_streamed_text import byte_level_model

PROMPTS = ["Héllo 🙂", "ça va?", "emoji 🚀"]


def streams(llm, params, kind):
    """request index -> its outputs in order, for one kind."""
    kinded = [SamplingParams(**{**vars(p), "output_kind": kind}) for p in params]
    order = llm._add(PROMPTS, kinded, None)
    got = {rid: [] for rid in order}
    for out in llm._drain(order):
        got[out.request_id].append(out)
    return [got[rid] for rid in order]


@pytest.fixture(scope="module", params=[False, True], ids=["stepwise", "chained"])
def llm(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bytes")
    byte_level_model(folder)
    return LLM(folder, device="cpu", num_kv_blocks=64, async_decode=request.param)


def test_the_three_kinds_give_the_same_tokens_and_text(llm):
    free = llm.generate("Héllo 🙂", SamplingParams(max_tokens=30, temperature=1.0, seed=1))[0]
    stop = free.text[8:10]
    params = [  # greedy (chained where the engine chains), sampled, and one that stops on text
        SamplingParams(max_tokens=44, temperature=0.0, ignore_eos=True),
        SamplingParams(max_tokens=30, temperature=1.0, seed=2, ignore_eos=True),
        SamplingParams(max_tokens=30, temperature=1.0, seed=1, stop=[stop]),
    ]
    cumulative = streams(llm, params, OutputKind.CUMULATIVE)
    delta = streams(llm, params, "delta")
    final = streams(llm, params, OutputKind.FINAL_ONLY)
    for c, d, f in zip(cumulative, delta, final, strict=True):
        whole = c[-1]
        assert whole.finished and len(c) == len(d)  # delta: an output every step, as cumulative
        assert [o.new_token_ids for o in d] == [o.new_token_ids for o in c]
        assert all(o.token_ids == o.new_token_ids for o in d)
        assert [t for o in d for t in o.token_ids] == whole.token_ids
        assert "".join(o.text for o in d) == whole.text
        assert len(f) == 1 and f[0].finished  # final only: one output, the cumulative's last
        assert (f[0].token_ids, f[0].text, f[0].finish_reason) == (
            whole.token_ids,
            whole.text,
            whole.finish_reason,
        )
    if llm.engine.chain is not None:  # the greedy request decoded alone at the end: chained
        assert llm.engine.chain.chained_steps > 0
    assert cumulative[2][-1].finish_reason == "stop"
    assert cumulative[2][-1].text == free.text[: free.text.find(stop)]


def test_an_aborted_final_only_request_still_reports(llm):
    rid = llm.engine.add_request("ça", SamplingParams(max_tokens=50, output_kind="final_only"))
    assert all(o.request_id != rid for o in llm.engine.step())
    out = llm.engine.abort(rid)
    assert out is not None and out.finished and out.finish_reason == "abort"
    assert not llm.engine.has_unfinished or llm.engine.step() == []


def test_a_bad_output_kind_is_refused_by_name():
    with pytest.raises(ValueError, match="output_kind='partial' must be one of"):
        SamplingParams(output_kind="partial")
