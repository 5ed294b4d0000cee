"""Continuous batching: which requests run this step, and how many tokens each computes.

Each step has a token budget (max_num_batched_tokens) and a seat limit (max_num_seqs).
Running requests go first, in priority order: a decode needs one token, an unfinished prompt
the next chunk of it (chunked prefill: a long prompt is spread over steps and shares each step
with decodes). When the KV pool cannot hold a running request's next tokens, the running
request with the lowest priority (latest arrival among equals) is preempted: its blocks are
freed and it goes back to the waiting queue, to be recomputed from its tokens so far (its
full blocks usually come back from the prefix cache). Waiting requests are then admitted in
priority order while budget, seats and blocks last; one that finds no seat or no blocks
preempts running requests of a worse priority (lowest first) to make room.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from kpt.serve._kv_cache import KVCacheManager
from kpt.serve._request import Request, RequestStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    chunked_prefill: bool = True

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_seqs={self.max_num_seqs} and max_num_batched_tokens="
                f"{self.max_num_batched_tokens} must both be >= 1"
            )


@dataclass
class ScheduledBatch:
    """One step's work: (request, tokens to compute) in batch order, and who was preempted."""

    work: list[tuple[Request, int]] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.work)


class Scheduler:
    """Owns the waiting and running queues; the engine calls schedule() once per step."""

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager, max_model_len: int) -> None:
        self.config = config
        self.kv = kv
        self.max_model_len = max_model_len
        self.waiting: list[Request] = []  # sorted by (priority, arrival)
        self.running: list[Request] = []  # sorted by (priority, arrival)
        self.num_preemptions = 0

    def add(self, request: Request) -> None:
        request.status = RequestStatus.WAITING
        bisect.insort(self.waiting, request, key=lambda r: r.sort_key)

    def remove(self, request: Request) -> None:
        """Take a finished or aborted request out of the queues and give back its blocks."""
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        self.kv.free(request.request_id)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.config.max_num_batched_tokens
        scheduled: set[str] = set()
        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            want = request.num_tokens + len(request.draft) - request.num_computed_tokens
            count = min(want, budget)
            if count < want and request.draft:  # verify only the drafts the budget holds
                del request.draft[max(0, count - (want - len(request.draft))) :]
                want = count
            if count < want and not self.config.chunked_prefill:
                i += 1  # without chunking a prompt waits for a step with room for all of it
                continue
            while not self.kv.grow(request.request_id, request.num_computed_tokens + count):
                victim = self.running[-1]
                self._preempt(victim, batch)
                if victim is request:
                    break
            else:
                batch.work.append((request, count))
                scheduled.add(request.request_id)
                budget -= count
                i += 1
                continue
            break  # the request preempted itself: nothing below it can run either
        if batch.preempted:
            return batch  # the pool is full: admit nobody new this step
        while self.waiting and budget > 0:
            request = self.waiting[0]
            if len(self.running) >= self.config.max_num_seqs:
                freed = self._make_room(request, batch)
                if freed is None:
                    break
                budget += freed
                continue
            # Prompt log-probabilities need every prompt token's logits: no cached prefix.
            if request.num_computed_tokens == 0 and not request.needs_prompt_logprobs:
                cached = self.kv.find_prefix(request.request_id, request.all_token_ids)
                request.num_computed_tokens = cached
                if not request.output_token_ids:
                    request.num_cached_tokens = cached
            want = request.num_tokens - request.num_computed_tokens
            count = min(want, budget)
            if count < want and not self.config.chunked_prefill:
                self._undo_admission(request)
                break
            if not self.kv.grow(request.request_id, request.num_computed_tokens + count):
                self._undo_admission(request)
                freed = self._make_room(request, batch)
                if freed is None:
                    break
                budget += freed
                continue
            self.waiting.pop(0)
            request.status = RequestStatus.RUNNING
            bisect.insort(self.running, request, key=lambda r: r.sort_key)
            batch.work.append((request, count))
            budget -= count
        return batch

    def _undo_admission(self, request: Request) -> None:
        self.kv.free(request.request_id)
        request.num_computed_tokens = 0

    def _make_room(self, request: Request, batch: ScheduledBatch) -> int | None:
        """Preempt the last running request if its priority is worse than `request`'s (a
        seat or blocks for a more urgent arrival); the step budget it gives back, or None."""
        if not self.running or self.running[-1].priority <= request.priority:
            return None
        victim = self.running[-1]
        freed = sum(n for r, n in batch.work if r is victim)
        self._preempt(victim, batch)
        return freed

    def _preempt(self, request: Request, batch: ScheduledBatch) -> None:
        self.running.remove(request)
        self.kv.free(request.request_id)
        request.num_computed_tokens = 0
        request.draft_computed = 0
        request.draft.clear()
        request.num_preemptions += 1
        self.num_preemptions += 1
        batch.work = [(r, n) for r, n in batch.work if r is not request]
        batch.preempted.append(request)
        self.add(request)
