"""Draft-model speculative decoding: a smaller model proposes tokens, the target verifies them.

The draft model keeps its own KV cache with the same number of blocks as the target's, and
every request uses the same block table in both, so the draft needs no block bookkeeping of
its own. A request's `draft_computed` counts the tokens whose draft KV is right: the draft
first catches up from there to the request's last token (its whole prompt the first time),
which gives the first proposal, then runs one token per further proposal. After the target
verified, the draft KV is kept up to the last accepted token (Engine.step lowers
draft_computed), so the next catch-up is usually one or two tokens. Outputs equal plain
greedy decoding whatever the draft proposes: the target decides every token.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from kpt.serve._batch import SeqWork, decode_step, table_array
from kpt.serve._config import load_config
from kpt.serve._loader import load_model
from kpt.serve._models import KVCache
from kpt.serve._request import Request

if TYPE_CHECKING:
    from kpt.serve._engine import Engine


class DraftProposer:
    """Owns the draft model and its cache; proposes tokens for decoding greedy requests."""

    def __init__(self, engine: Engine, model_dir: str | Path, num_blocks: int) -> None:
        config = load_config(model_dir)
        target = engine.model_config
        if config.vocab_size != target.vocab_size:
            raise ValueError(
                f"draft model {model_dir} has a vocabulary of {config.vocab_size} tokens but "
                f"the target has {target.vocab_size}; the draft must share the tokenizer"
            )
        if config.max_position < engine.max_model_len:
            raise ValueError(
                f"draft model {model_dir} takes {config.max_position} positions but the engine "
                f"serves up to {engine.max_model_len}; pass max_model_len <= "
                f"{config.max_position}"
            )
        self.engine = weakref.proxy(engine)  # the engine owns this: no cycle (freeze_gc)
        self.config = config
        model = load_model(model_dir, config, engine.dtype, engine.device)
        cache = KVCache(config, num_blocks, engine.config.block_size, engine.dtype, engine.device)
        self.runner = engine._make_runner(model, cache, samples_per_seq=1)
        self.calls = 0

    def propose(self, candidates: Sequence[tuple[Request, int]]) -> None:
        """Set request.draft (at most `room` tokens) for each (request, room) it can serve."""
        kv = self.engine.kv
        budget = self.engine.config.max_num_batched_tokens
        work: list[SeqWork] = []
        proposing: list[tuple[Request, int]] = []
        for request, room in candidates:
            if budget <= 0:
                break
            # Never past the target's own computed tokens: drafts that were proposed but not
            # verified (the request did not fit the last step) left unconfirmed draft KV.
            start = min(request.draft_computed, request.num_computed_tokens)
            behind = request.num_tokens - start
            chunk = min(behind, budget)
            # Blocks for the target's verification of `room` drafts, which the draft's own
            # writes (up to the position before the last draft) stay inside.
            if not kv.grow(request.request_id, request.num_tokens + room):
                continue
            budget -= chunk
            sample = 1 if chunk == behind else 0  # a long catch-up is spread over steps
            work.append(
                SeqWork(
                    request.token_slice(start, chunk), start, kv.blocks(request.request_id), sample
                )
            )
            request.draft_computed = start + chunk
            if sample:
                proposing.append((request, room))
        if not work:
            return
        logits, _ = self.runner.run(work)
        self.calls += 1
        if not proposing:
            return
        # Each further proposal feeds the last one back in on the device; the proposals are
        # read once at the end (one sync, not one per call).
        picks = [(np.arange(len(proposing)), logits.argmax(dim=-1))]
        rooms = np.fromiter((room for _, room in proposing), np.int64, len(proposing))
        last = np.fromiter((r.num_tokens - 1 for r, _ in proposing), np.int64, len(proposing))
        tables = table_array([kv.blocks(r.request_id) for r, _ in proposing])
        for i in range(1, int(rooms.max())):
            active = np.flatnonzero(rooms > i)  # requests with room for one more
            previous_rows, previous = picks[-1]
            ids = previous
            if len(active) != len(previous_rows):
                where = np.searchsorted(previous_rows, active)
                ids = previous[torch.from_numpy(where).to(previous.device)]
            batch = decode_step(last[active] + i, tables[active], self.engine.config.block_size)
            logits = self.runner.run_batch(batch, ids)
            self.calls += 1
            picks.append((active, logits.argmax(dim=-1)))
        values = torch.cat([tokens for _, tokens in picks]).cpu().tolist()
        drafts: list[list[int]] = [[] for _ in proposing]
        offset = 0
        for rows, _ in picks:
            for j, token in zip(rows.tolist(), values[offset : offset + len(rows)], strict=True):
                drafts[j].append(token)
            offset += len(rows)
        for (request, room), draft in zip(proposing, drafts, strict=True):
            request.draft = draft[:room]
            # KV written through the position before the last proposal.
            request.draft_computed = request.num_tokens - 1 + len(request.draft)
