"""How much quality a model variant gives up against its reference, with a confidence interval.

Two scores on held-out text, from one pass over each sequence: next-token accuracy (for every
position, the variant's most likely next token given the text so far, against the text's own
next token) and perplexity (the exponential of the mean negative log-likelihood of the text's
tokens). Each sequence is one unit: its accuracy, its mean negative log-likelihood, and its
agreement with the reference's predictions. kpt.abtest compares the variant's per-sequence
figures with the reference's (paired, the same sequences) and tests non-inferiority of the
accuracy within a margin.

It runs through the public engine interface (LLM.generate with prompt_logprobs=1 and one
generated token per sequence), so it works on any device and dtype the engine does.

Without held-out sequences given, they are sampled from the reference itself (temperature 1,
seeded): text the reference finds likely, so a variant that keeps the reference's
predictions keeps its accuracy. Needs kpt-abtest (pip install kpt-abtest).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import kpt.abtest as ab
from kpt.serve import LLM, SamplingParams
from kpt.serve._config import QUANTIZATIONS

# The held-out sequence as the prompt: each prompt token's log-probability and the most
# likely token at its position.
SCORE = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True, prompt_logprobs=1)


@dataclass(frozen=True)
class VariantQuality:
    variant: str
    dtype: str  # the activations' (a form naming none: the model's own on the device)
    quantization: str | None  # of the linear layers' weights ("int8", "fp8"), None: none
    accuracy: float  # mean per-sequence next-token accuracy on the held-out text
    agreement: float  # mean share of positions where it predicts what the reference does
    perplexity: float  # exp of the mean negative log-likelihood per scored token
    vs_reference: dict[str, Any]  # kpt.abtest Comparison (accuracy, variant - reference)
    nll_vs_reference: dict[str, Any]  # the same for the per-sequence mean NLL (lower: better)
    non_inferior: bool  # accuracy worse than the reference's by less than `margin`, shown
    non_inferiority: dict[str, Any]  # kpt.abtest MarginTest fields

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def held_out_from(
    llm: LLM, count: int, length: int, vocab_size: int, seed: int = 0
) -> list[list[int]]:
    """`count` sequences of `length` tokens sampled from `llm` (temperature 1, seeded)."""
    rng = random.Random(seed)
    starts = [[rng.randrange(2, vocab_size) for _ in range(2)] for _ in range(count)]
    params = [
        SamplingParams(max_tokens=length - 2, temperature=1.0, seed=seed + i, ignore_eos=True)
        for i in range(count)
    ]
    outs = llm.generate(starts, params)
    return [s + list(o.token_ids) for s, o in zip(starts, outs, strict=True)]


@dataclass(frozen=True)
class Scores:
    """Per held-out sequence: predicted next tokens and mean negative log-likelihood."""

    predictions: list[list[int]]
    nll: list[float]
    tokens: list[int]  # scored tokens per sequence

    @property
    def perplexity(self) -> float:
        total = sum(n * t for n, t in zip(self.nll, self.tokens, strict=True))
        return math.exp(total / sum(self.tokens))


def score_sequences(llm: LLM, sequences: Sequence[Sequence[int]], context: int) -> Scores:
    """For each sequence, every token after the first `context`: the model's most likely token
    at its position (given the text before it) and the token's own log-probability."""
    outs = llm.generate([list(s) for s in sequences], SCORE)
    predictions, nll, tokens = [], [], []
    for sequence, out in zip(sequences, outs, strict=True):
        entries = out.prompt_logprobs[context:]
        predictions.append([max(e, key=e.__getitem__) for e in entries])
        own = [e[t] for e, t in zip(entries, sequence[context:], strict=True)]
        nll.append(-sum(own) / max(len(own), 1))
        tokens.append(len(own))
    return Scores(predictions, nll, tokens)


def variant_quality(
    model_dir: str | Path,
    variants: Mapping[str, str | torch.dtype],
    *,
    reference: str,
    device: str = "cpu",
    sequences: Sequence[Sequence[int]] | None = None,
    num_sequences: int = 24,
    length: int = 40,
    context: int = 8,
    margin: float = 0.02,
    alpha: float = 0.05,
    seed: int = 0,
    engine_options: Mapping[str, Any] | None = None,
) -> dict[str, VariantQuality]:
    """Quality of each variant (name -> dtype) against `reference` (one of the names)."""
    if reference not in variants:
        raise ValueError(
            f"reference {reference!r} is not one of the variants {', '.join(variants)}; "
            "name the variant the others are measured against"
        )
    if sequences is not None and any(len(s) <= context for s in sequences):
        raise ValueError(
            f"every held-out sequence needs more than context={context} tokens; "
            "give longer sequences or a smaller context"
        )
    options = {"num_kv_blocks": 256, **(engine_options or {})}
    forms = {name: variant_form(value) for name, value in variants.items()}
    reference_llm = LLM(model_dir, device=device, **forms[reference], **options)
    dtypes = {reference: reference_llm.engine.dtype}  # what each form computes in here
    if sequences is None:
        vocab = reference_llm.engine.model_config.vocab_size
        sequences = held_out_from(reference_llm, num_sequences, length, vocab, seed)
    truth = [list(s[context:]) for s in sequences]
    scores = {reference: score_sequences(reference_llm, sequences, context)}
    del reference_llm
    for name, form in forms.items():
        if name != reference:
            llm = LLM(model_dir, device=device, **form, **options)
            dtypes[name] = llm.engine.dtype
            scores[name] = score_sequences(llm, sequences, context)
            del llm
    predictions = {name: s.predictions for name, s in scores.items()}
    accuracy = {name: _share(p, truth) for name, p in predictions.items()}
    report = {}
    for name, form in forms.items():
        comparison = ab.compare(
            accuracy[reference], accuracy[name], "mean", alpha=alpha, paired=True,
            higher_is_better=True,
        )  # fmt: skip
        nll = ab.compare(
            scores[reference].nll, scores[name].nll, "mean", alpha=alpha, paired=True,
            higher_is_better=False,
        )  # fmt: skip
        test = ab.non_inferiority(
            accuracy[reference], accuracy[name], margin, alpha=alpha, higher_is_better=True
        )
        report[name] = VariantQuality(
            variant=name,
            dtype=str(dtypes[name]).replace("torch.", ""),
            quantization=form["quantization"],
            accuracy=sum(accuracy[name]) / len(accuracy[name]),
            agreement=sum(_share(predictions[name], predictions[reference]))
            / len(predictions[name]),
            perplexity=scores[name].perplexity,
            vs_reference=comparison.to_dict(),
            nll_vs_reference=nll.to_dict(),
            non_inferior=bool(test.passed),
            non_inferiority=_plain(test),
        )
    return report


def _share(predicted: list[list[int]], truth: list[list[int]]) -> list[float]:
    return [
        sum(p == t for p, t in zip(ps, ts, strict=True)) / max(len(ts), 1)
        for ps, ts in zip(predicted, truth, strict=True)
    ]


def variant_form(value: str | torch.dtype) -> dict[str, Any]:
    """A variant's engine options from its form: a torch dtype ("bfloat16"), a quantization
    ("int8", "fp8": the model's dtype on the device), or both ("bfloat16/int8")."""
    if isinstance(value, torch.dtype):
        return {"dtype": value, "quantization": None}
    dtype_name, _, quantization = str(value).rpartition("/")
    if not dtype_name and quantization not in QUANTIZATIONS:
        dtype_name, quantization = quantization, ""
    if quantization and quantization not in QUANTIZATIONS:
        raise ValueError(
            f"variant {value!r}: {quantization!r} is not a quantization "
            f"({', '.join(QUANTIZATIONS)}); e.g. bfloat16/int8"
        )
    dtype = getattr(torch, dtype_name, None) if dtype_name else None
    if dtype_name and not isinstance(dtype, torch.dtype):
        raise ValueError(
            f"variant {value!r}: {dtype_name!r} is not a torch dtype; e.g. float32, bfloat16"
        )
    return {"dtype": dtype, "quantization": quantization or None}


def _plain(test: Any) -> dict[str, Any]:
    fields = getattr(test, "__dataclass_fields__", None)
    raw = {name: getattr(test, name) for name in fields} if fields else dict(vars(test))
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in raw.items()}


def format_quality(report: Mapping[str, VariantQuality], reference: str) -> str:
    lines = [
        f"{'variant':<15}{'form':<15}{'accuracy':>9}{'agree':>8}{'perplexity':>12}  "
        f"accuracy vs {reference}"
    ]
    for q in report.values():
        lo, hi = q.vs_reference["ci"]
        verdict = "non-inferior" if q.non_inferior else "not shown non-inferior"
        form = q.dtype + (f"/{q.quantization}" if q.quantization else "")
        lines.append(
            f"{q.variant:<15}{form:<15}{q.accuracy:>9.4f}{q.agreement:>8.3f}"
            f"{q.perplexity:>12.3f}  "
            f"{q.vs_reference['effect']:+.4f} [{lo:+.4f}, {hi:+.4f}] {verdict}"
        )
    return "\n".join(lines)
