"""Chained decode steps: the next step is launched before this one's tokens are read.

At steady decode the device finishes a CUDA-graph step in about a millisecond, about as long
as the host takes to build the next step and to turn the last one's tokens into outputs. Done
one after the other, the device idles half the time. Here the host launches step N+1 while
step N runs, feeding N's sampled tokens to N+1 on the device (greedy picks never leave it),
and only then reads N's tokens and builds N's outputs while N+1 runs. step() therefore returns
the outputs of the step launched one call earlier.

A chain continues while every request decodes one greedy token and nothing else asks for the
scheduler: it stops when requests wait and enough seats are free to admit a batch of them
(or one waits with a better priority than a running one), when a block cannot be had, or when
no request is left. A request that ends by length is left out of the next step in advance;
one that ends on an EOS or stop token is found one step late, and the token computed for it
in the meantime is dropped (its KV lands in its own blocks, freed after that step in stream
order, past every token it keeps, so no cached prefix is touched).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from kpt.serve._batch import SeqWork, StepBatch, build_step, decode_step
from kpt.serve._request import Request, RequestOutput, RequestStatus

if TYPE_CHECKING:
    from kpt.serve._engine import Engine

# A chain gives way to the scheduler once this share of the seats is free and requests wait.
ADMIT_SHARE = 8


@dataclass
class _Launched:
    requests: list[Request]
    batch: StepBatch
    tokens: torch.Tensor  # [S] greedy picks, on the device
    host: torch.Tensor  # [S] the same, copied asynchronously to (pinned) host memory
    ready: torch.cuda.Event | None
    left: np.ndarray  # [S] tokens each request may produce from this step on (length limits)
    finished_before: int  # Engine.num_finished when launched: unchanged means none ended


class DecodeChain:
    """Owned by the Engine; holds at most one launched, unread decode step."""

    def __init__(self, engine: Engine) -> None:
        self.engine = weakref.proxy(engine)  # the engine owns this: no cycle (freeze_gc)
        self.block_size = engine.config.block_size
        cuda = engine.device.type == "cuda"
        size = engine.config.max_num_seqs
        # Two host buffers: the step being read and the one launched after it.
        self._host = [torch.empty(size, dtype=torch.long, pin_memory=cuda) for _ in range(2)]
        self._flip = 0
        self._cuda = cuda
        self._readback = torch.cuda.Stream(engine.device) if cuda else None
        self.inflight: _Launched | None = None
        self.host_seconds = 0.0  # host time of the last advance(), for the device clock
        self.chained_steps = 0

    def can_start(self, work) -> bool:
        for request, count in work:
            if (
                count != 1
                or request.draft
                or not request.params.greedy
                or request.params.logprobs is not None  # picks never leave the device
                or request.num_computed_tokens != request.num_tokens - 1
            ):
                return False
        return True

    def start(self, requests: list[Request]) -> None:
        """Launch a scheduled all-decode step without reading its tokens."""
        kv = self.engine.kv
        for r in requests:  # the last prompt token, when the prefix cache held the rest
            if r.num_computed_tokens < len(r.prompt_token_ids):
                self.engine._prompt_tokens += 1
        work = [
            SeqWork(
                r.output_token_ids[-1:] or r.prompt_token_ids[-1:],
                r.num_tokens - 1,
                kv.blocks(r.request_id),
                1,
            )
            for r in requests
        ]
        left = np.fromiter(
            (r.max_output - len(r.output_token_ids) for r in requests), np.int64, len(requests)
        )
        self.inflight = self._launch(requests, build_step(work, self.block_size), None, left)

    def advance(self) -> list[RequestOutput]:
        """Launch the next step of the chain (if it goes on), then read the previous one."""
        clock = self.engine.clock
        start = clock.host_time()
        previous = self.inflight
        assert previous is not None
        following = self._next(previous)
        self.inflight = None if following is None else self._launch(*following)
        outputs = self._collect(previous)
        self.host_seconds = clock.host_time() - start
        return outputs

    # --- internals ---------------------------------------------------------------------

    def _launch(self, requests, batch: StepBatch, input_ids, left: np.ndarray) -> _Launched:
        finished_before = self.engine.num_finished
        logits = self.engine.runner.run_batch(batch, input_ids)
        tokens = logits.argmax(dim=-1)
        self._flip ^= 1
        host = self._host[self._flip][: len(requests)]
        ready = None
        if self._cuda:
            # Read back on a side stream: the step's stream goes on to the next replay without
            # a device-to-host copy in between (7-10 us a step, profile_decode_gaps.py).
            picked = torch.cuda.Event()
            picked.record()
            self._readback.wait_event(picked)
            with torch.cuda.stream(self._readback):
                host.copy_(tokens, non_blocking=True)
                tokens.record_stream(self._readback)
            ready = torch.cuda.Event()
            ready.record(self._readback)
        else:
            host.copy_(tokens)
        return _Launched(requests, batch, tokens, host, ready, left, finished_before)

    def _next(self, previous: _Launched):
        """(requests, batch, device input ids) of the step after `previous`, or None."""
        engine = self.engine
        scheduler = engine.scheduler
        if scheduler.waiting:
            seats = engine.config.max_num_seqs
            free = seats - len(scheduler.running)
            urgent = scheduler.running and (
                scheduler.waiting[0].sort_key[0] < scheduler.running[-1].sort_key[0]
            )
            if free >= max(1, seats // ADMIT_SHARE) or urgent:
                return None
        # Tokens each request may still produce after the previous step's (0: it ends by
        # length when that one is read, so it gets no next step).
        left = previous.left - 1
        alive = left > 0
        if engine.num_finished != previous.finished_before:  # a stop token or an abort
            alive &= np.fromiter(
                (r.status is not RequestStatus.FINISHED for r in previous.requests),
                bool,
                len(previous.requests),
            )
        prev = previous.batch
        if alive.all():  # the usual step: the same requests, one position on
            requests, ids, tables = previous.requests, previous.tokens, prev.block_tables
            positions = prev.positions + 1
        else:
            rows = np.flatnonzero(alive)
            if not len(rows):
                return None
            requests = [previous.requests[i] for i in rows.tolist()]
            ids = previous.tokens[torch.from_numpy(rows).to(previous.tokens.device)]
            tables, positions, left = prev.block_tables[rows], prev.positions[rows] + 1, left[rows]
        bs = self.block_size
        crossing = np.flatnonzero(positions % bs == 0)
        if len(crossing):  # these start a block: grow them, in a copy of the tables
            width = max(int(positions.max()) // bs + 1, tables.shape[1])
            tables = np.pad(tables, ((0, 0), (0, width - tables.shape[1])))
            kv = engine.kv
            for j in crossing.tolist():
                request_id = requests[j].request_id
                block = int(positions[j]) // bs
                if not kv.grow(request_id, int(positions[j]) + 1):
                    return None  # out of blocks: the scheduler decides who is preempted
                tables[j, block] = kv.blocks(request_id)[block]
        self.chained_steps += 1
        return requests, decode_step(positions, tables, bs), ids, left

    def _collect(self, launched: _Launched) -> list[RequestOutput]:
        engine = self.engine
        if launched.ready is not None:
            launched.ready.synchronize()
        tokens = launched.host.tolist()
        now = engine.clock.now_ms()
        outputs = []
        emit = engine._emit  # once, not through the weak proxy for every request
        block_size = self.block_size
        appended = 0
        for request, token in zip(launched.requests, tokens, strict=True):
            if request.status is RequestStatus.FINISHED:
                continue  # aborted, or ended on a stop token one step ago
            computed = request.num_computed_tokens + 1
            request.num_computed_tokens = computed
            output = request.output_token_ids
            # The usual case inline, as _emit would do it without its three calls (the host's
            # main cost at steady decode): a token that ends nothing and fills no block, of a
            # request that gives out only its final output.
            if (
                request.quiet
                and computed % block_size
                and len(output) + 1 < request.max_output
                and token not in request.stop_ids
                and request.first_token_ms is not None
            ):
                output.append(token)
                appended += 1
                continue
            result = emit(request, [token], now)
            if result is not None:
                outputs.append(result)
        engine._generated += appended
        engine._steps += 1
        return outputs
