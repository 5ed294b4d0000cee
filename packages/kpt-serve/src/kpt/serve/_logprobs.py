"""Log-probabilities of chosen tokens and of the most likely ones, for rows of a step's logits.

One log-softmax over the rows that ask, one top-k at the largest k asked, one copy to the host:
requests that ask for nothing cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
