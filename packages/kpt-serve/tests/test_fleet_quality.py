"""Variant quality against a reference through kpt.abtest: next-token accuracy and perplexity
on held-out text, paired per sequence, with intervals and a non-inferiority verdict."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_gpt2, random_prompts, transformers

pytest.importorskip("kpt.abtest")
quality = pytest.importorskip("kpt.serve.fleet.quality")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_gpt2(tmp_path_factory.mktemp("quality") / "m", layers=1, width=32)


def test_a_copy_of_the_reference_loses_nothing_and_bf16_is_measured(model_dir):
    report = quality.variant_quality(
        model_dir,
        {"fp32": "float32", "copy": "float32", "bf16": "bfloat16"},
        reference="fp32",
        num_sequences=12,
        length=24,
        context=6,
        margin=0.05,
    )
    assert set(report) == {"fp32", "copy", "bf16"}
    copy, bf16 = report["copy"], report["bf16"]
    # The same weights in the same dtype predict the same tokens: no difference at all.
    assert copy.agreement == 1.0 and copy.accuracy == report["fp32"].accuracy
    assert copy.vs_reference["effect"] == 0.0 and copy.non_inferior
    # bf16 is measured against fp32 on the same sequences, with its interval around the effect.
    lo, hi = bf16.vs_reference["ci"]
    assert lo <= bf16.vs_reference["effect"] <= hi
    assert bf16.vs_reference["n_a"] == bf16.vs_reference["n_b"] == 12
    assert 0.0 <= bf16.agreement <= 1.0 and bf16.dtype == "bfloat16"
    assert "bf16" in quality.format_quality(report, "fp32")
    assert copy.nll_vs_reference["effect"] == 0.0 and copy.perplexity == report["fp32"].perplexity
    assert bf16.perplexity != report["fp32"].perplexity  # rounding moved the log-likelihoods
    assert bf16.perplexity == pytest.approx(report["fp32"].perplexity, rel=0.05)


def test_perplexity_and_accuracy_equal_transformers_on_given_text(model_dir):
    sequences = random_prompts(6, 20, 30, seed=8)
    context = 4
    report = quality.variant_quality(
        model_dir, {"fp32": "float32"}, reference="fp32", sequences=sequences, context=context
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    nll, hits, scored = 0.0, [], 0
    with torch.no_grad():
        for s in sequences:
            logp = torch.log_softmax(model(torch.tensor([s])).logits[0], dim=-1)
            rows = range(context - 1, len(s) - 1)  # row i scores token i + 1
            nll -= sum(logp[i, s[i + 1]].item() for i in rows)
            hits.append(sum(int(logp[i].argmax()) == s[i + 1] for i in rows) / len(rows))
            scored += len(rows)
    assert report["fp32"].perplexity == pytest.approx(math.exp(nll / scored), rel=1e-4)
    assert report["fp32"].accuracy == pytest.approx(sum(hits) / len(hits))


def test_mistakes_are_named(model_dir):
    with pytest.raises(ValueError, match="reference 'int4' is not one of the variants"):
        quality.variant_quality(model_dir, {"fp32": "float32"}, reference="int4")
    with pytest.raises(ValueError, match="not a torch dtype"):
        quality.variant_quality(model_dir, {"fp32": "float32", "x": "float99"}, reference="fp32")
    with pytest.raises(ValueError, match="more than context=8"):
        quality.variant_quality(
            model_dir, {"fp32": "float32"}, reference="fp32", sequences=[[2, 3, 4]]
        )
