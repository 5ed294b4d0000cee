"""Log-probabilities of chosen tokens and of the most likely ones, for rows of a step's logits.

One log-softmax over the rows that ask, one top-k at the largest k asked, one copy to the host:
requests that ask for nothing cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from kpt.serve._request import Request


def token_logprobs(
    logits: torch.Tensor, rows: Sequence[int], chosen: Sequence[int], top: Sequence[int]
) -> list[dict[int, float]]:
    """For each (row, chosen token, k): {chosen: its log-probability, then the k most likely
    tokens: theirs}, from the log-softmax of the row's raw logits."""
    if not rows:
        return []
    device = logits.device
    logp = torch.log_softmax(
        logits.index_select(0, torch.tensor(list(rows), device=device)).float(), dim=-1
    )
    own = logp.gather(1, torch.tensor(list(chosen), device=device)[:, None])[:, 0]
    k = max(top)
    if k:
        values, indices = logp.topk(k, dim=-1)
        values, indices = values.cpu().tolist(), indices.cpu().tolist()
    own = own.cpu().tolist()
    result = []
    for i, (token, count) in enumerate(zip(chosen, top, strict=True)):
        entry = {int(token): own[i]}
        for j in range(count):
            entry.setdefault(indices[i][j], values[i][j])
        result.append(entry)
    return result


def step_logprobs(work, logits, spans, emitted) -> dict[int, list[dict[int, float]]]:
    """One step's log-probabilities: records prompt ones on the requests that ask, and
    returns, by work index, those of the tokens each request emitted (the engine keeps the
    ones it appends). work: (request, tokens scheduled) per sequence; spans: (work index, first row,
    rows) of the logits; emitted: work index -> tokens."""
    rows: list[int] = []
    chosen: list[int] = []
    top: list[int] = []
    owners: list[tuple[int, Request, bool]] = []  # (work index, request, is a prompt row)
    for w, first, count in spans:
        request = work[w][0]
        params = request.params
        if request.needs_prompt_logprobs:
            prompt = request.prompt_token_ids
            start = request.num_computed_tokens
            for r in range(count):
                target = start + r + 1  # the prompt token this row's logits score
                if len(request.prompt_logprobs) <= target < len(prompt):
                    rows.append(first + r)
                    chosen.append(prompt[target])
                    top.append(params.prompt_logprobs)
                    owners.append((w, request, True))
        tokens = emitted.get(w)
        if tokens is not None and params.logprobs is not None:
            base = first + count - 1 - len(request.draft)
            for d, token in enumerate(tokens):
                rows.append(base + d)
                chosen.append(token)
                top.append(params.logprobs)
                owners.append((w, request, False))
    scores: dict[int, list[dict[int, float]]] = {}
    for (w, request, prompt_row), entry in zip(
        owners, token_logprobs(logits, rows, chosen, top), strict=True
    ):
        if prompt_row:
            request.prompt_logprobs.append(entry)
        else:
            scores.setdefault(w, []).append(entry)
    return scores
