"""How much quality a model variant gives up against its reference, with a confidence interval.

The score is next-token accuracy on held-out text: for every position of every held-out
sequence, the variant's greedy next token given the text so far, against the text's own next
token. Each sequence is one unit: its accuracy, and its agreement with the reference's
predictions. kpt.abtest compares the variant's per-sequence accuracies with the reference's
(paired, the same sequences) and tests non-inferiority within a margin.

It runs through the public engine interface (LLM.generate with max_tokens=1 per prefix; the
prefix cache makes the prefixes of one sequence cheap), so it works on any device and dtype
the engine does. Perplexity would need the engine to return log-probabilities, which it does
not yet; accuracy is what its interface measures exactly.

Without held-out sequences given, they are sampled from the reference itself (temperature 1,
seeded): text the reference finds likely, so a variant that keeps the reference's
predictions keeps its accuracy. Needs kpt-abtest (pip install kpt-abtest).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import kpt.abtest as ab
from kpt.serve import LLM, SamplingParams

GREEDY_NEXT = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)


@dataclass(frozen=True)
class VariantQuality:
    variant: str
    dtype: str
    accuracy: float  # mean per-sequence next-token accuracy on the held-out text
    agreement: float  # mean share of positions where it predicts what the reference does
    vs_reference: dict[str, Any]  # kpt.abtest Comparison (accuracy, variant - reference)
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


def next_token_predictions(llm: LLM, sequences: Sequence[Sequence[int]], context: int) -> list:
    """For each sequence, the greedy next token after each prefix of `context` tokens or more."""
    prompts = [list(s[:k]) for s in sequences for k in range(context, len(s))]
    flat = [o.token_ids[0] for o in llm.generate(prompts, GREEDY_NEXT)]
    out, i = [], 0
    for s in sequences:
        n = max(len(s) - context, 0)
        out.append(flat[i : i + n])
        i += n
    return out


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
    dtypes = {name: _dtype(value) for name, value in variants.items()}
    reference_llm = LLM(model_dir, device=device, dtype=dtypes[reference], **options)
    if sequences is None:
        vocab = reference_llm.engine.model_config.vocab_size
        sequences = held_out_from(reference_llm, num_sequences, length, vocab, seed)
    truth = [list(s[context:]) for s in sequences]
    predictions = {reference: next_token_predictions(reference_llm, sequences, context)}
    del reference_llm
    for name, dtype in dtypes.items():
        if name != reference:
            llm = LLM(model_dir, device=device, dtype=dtype, **options)
            predictions[name] = next_token_predictions(llm, sequences, context)
            del llm
    accuracy = {name: _share(p, truth) for name, p in predictions.items()}
    report = {}
    for name, dtype in dtypes.items():
        comparison = ab.compare(
            accuracy[reference], accuracy[name], "mean", alpha=alpha, paired=True,
            higher_is_better=True,
        )  # fmt: skip
        test = ab.non_inferiority(
            accuracy[reference], accuracy[name], margin, alpha=alpha, higher_is_better=True
        )
        report[name] = VariantQuality(
            variant=name,
            dtype=str(dtype).replace("torch.", ""),
            accuracy=sum(accuracy[name]) / len(accuracy[name]),
            agreement=sum(_share(predictions[name], predictions[reference]))
            / len(predictions[name]),
            vs_reference=comparison.to_dict(),
            non_inferior=bool(test.passed),
            non_inferiority=_plain(test),
        )
    return report


def _share(predicted: list[list[int]], truth: list[list[int]]) -> list[float]:
    return [
        sum(p == t for p, t in zip(ps, ts, strict=True)) / max(len(ts), 1)
        for ps, ts in zip(predicted, truth, strict=True)
    ]


def _dtype(value: str | torch.dtype) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"variant dtype {value!r} is not a torch dtype; e.g. float32, bfloat16")
    return dtype


def _plain(test: Any) -> dict[str, Any]:
    fields = getattr(test, "__dataclass_fields__", None)
    raw = {name: getattr(test, name) for name in fields} if fields else dict(vars(test))
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in raw.items()}


def format_quality(report: Mapping[str, VariantQuality], reference: str) -> str:
    lines = [f"{'variant':<12}{'dtype':<10}{'accuracy':>9}{'agree':>8}  vs {reference}"]
    for q in report.values():
        lo, hi = q.vs_reference["ci"]
        verdict = "non-inferior" if q.non_inferior else "not shown non-inferior"
        lines.append(
            f"{q.variant:<12}{q.dtype:<10}{q.accuracy:>9.4f}{q.agreement:>8.3f}  "
            f"{q.vs_reference['effect']:+.4f} [{lo:+.4f}, {hi:+.4f}] {verdict}"
        )
    return "\n".join(lines)
