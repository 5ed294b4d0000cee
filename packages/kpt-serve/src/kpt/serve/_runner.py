"""Turns a scheduled batch into device tensors, runs the model, returns the rows to sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kpt.serve._attention import AttentionGroup, AttentionMetadata
from kpt.serve._models import DecoderModel, KVCache
from kpt.serve._request import Request


class ModelRunner:
    """Owns the model and its KV cache on one device."""

    def __init__(self, model: DecoderModel, cache: KVCache, block_size: int, device) -> None:
        self.model = model
        self.cache = cache
        self.block_size = block_size
        self.device = torch.device(device)

    @torch.no_grad()  # not inference_mode: wrapper-subclass devices (kpt_sim) refuse its views
    def run(
        self, work: Sequence[tuple[Request, int]], block_tables: Sequence[list[int]]
    ) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """Compute the KV of `work`'s tokens; logits for the requests whose prompt is done.

        A request carrying draft tokens (speculative decoding) gets a row for each of its
        last 1 + len(draft) positions, so the drafts are verified in this one step.
        Returns (logits [rows, vocab], spans): a span (index into work, first row, rows).
        """
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_rows: list[int] = []  # flat-batch row of each row of logits
        spans: list[tuple[int, int, int]] = []
        for w, ((request, count), table) in enumerate(zip(work, block_tables, strict=True)):
            start = request.num_computed_tokens
            tokens = request.all_token_ids + request.draft
            ids.extend(tokens[start : start + count])
            for pos in range(start, start + count):
                positions.append(pos)
                slots.append(
                    table[pos // self.block_size] * self.block_size + pos % self.block_size
                )
            if start + count == len(tokens):
                rows = 1 + len(request.draft)
                spans.append((w, len(sample_rows), rows))
                sample_rows.extend(range(len(ids) - rows, len(ids)))
        meta = AttentionMetadata(
            slot_mapping=self._tensor(slots),
            groups=self._groups(work, block_tables),
            num_tokens=len(ids),
        )
        hidden = self.model(self._tensor(ids), self._tensor(positions), meta, self.cache)
        if not sample_rows:
            return hidden.new_empty(0, self.model.config.vocab_size), []
        rows = hidden.index_select(0, self._tensor(sample_rows))
        return self.model.logits(rows), spans

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).to(self.device, non_blocking=True)

    def _groups(self, work, block_tables) -> list[AttentionGroup]:
        # Decodes (one query) share one group; prompt chunks another, padded to the longest.
        starts, offset = [], 0
        for _, count in work:
            starts.append(offset)
            offset += count
        decodes = [w for w, (_, count) in enumerate(work) if count == 1]
        prefills = [w for w, (_, count) in enumerate(work) if count > 1]
        return [
            self._group(members, work, block_tables, starts)
            for members in (decodes, prefills)
            if members
        ]

    def _group(self, members, work, block_tables, starts) -> AttentionGroup:
        bs = self.block_size
        max_q = max(work[w][1] for w in members)
        max_blocks = max(-(-(work[w][0].num_computed_tokens + work[w][1]) // bs) for w in members)
        token_index, valid_rows, out_index, tables = [], [], [], []
        q_pos, ctx_len = [], []
        for b, w in enumerate(members):
            request, count = work[w]
            start = request.num_computed_tokens
            for i in range(max_q):
                real = i < count
                token_index.append(starts[w] + i if real else 0)
                q_pos.append(start + i if real else 0)  # a pad query attends to key 0 only
                if real:
                    valid_rows.append(b * max_q + i)
                    out_index.append(starts[w] + i)
            ctx_len.append(start + count)
            table = block_tables[w][: -(-(start + count) // bs)]
            tables.append(table + [0] * (max_blocks - len(table)))
        keys = torch.arange(max_blocks * bs)
        q = torch.tensor(q_pos).view(len(members), max_q, 1)
        ctx = torch.tensor(ctx_len).view(len(members), 1, 1)
        mask = (keys[None, None, :] <= q) & (keys[None, None, :] < ctx)
        return AttentionGroup(
            token_index=self._tensor(token_index),
            valid_rows=self._tensor(valid_rows),
            out_index=self._tensor(out_index),
            block_tables=self._tensor_2d(tables),
            mask=mask.unsqueeze(1).to(self.device, non_blocking=True),
            batch=len(members),
            max_q=max_q,
        )

    def _tensor_2d(self, rows: list[list[int]]) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.long).to(self.device, non_blocking=True)
