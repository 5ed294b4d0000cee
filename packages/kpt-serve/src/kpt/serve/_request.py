"""One request's state inside the engine, and what the engine reports about it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from kpt.serve._sampling import SamplingParams
from kpt.serve._tokenizer import TextStream


class RequestStatus(enum.StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Request:
    """Tokens so far, how many have their KV computed, and timing in device-clock ms."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int  # lower runs first, as in vLLM
    arrival: int  # order of arrival, breaks priority ties
    generator: torch.Generator | None
    # Tokens that end it (stop_token_ids, and EOS unless ignore_eos) and how many it may
    # produce (max_tokens, or less where max_model_len comes first): checked every token.
    stop_ids: frozenset[int] = frozenset()
    max_output: int = 0
    # Gives out only its final output and has no stop strings: a chained decode step appends
    # its token inline unless it ends the request or fills a block (DecodeChain._collect).
    quiet: bool = False
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    draft: list[int] = field(default_factory=list)  # proposed tokens to verify this step
    draft_computed: int = 0  # tokens whose KV the draft model holds (draft-model speculation)
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: str | None = None  # "length", "stop", "abort"
    num_preemptions: int = 0
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache at admission
    arrival_ms: float = 0.0
    first_token_ms: float | None = None
    finished_ms: float | None = None
    text_stream: TextStream | None = None  # the output as text so far (a tokenizer.json)
    text_end: int | None = None  # where a stop string began in the output's text
    text_sent: int = 0  # characters of text already given out (OutputKind.DELTA)
    logprobs: list[dict[int, float]] = field(default_factory=list)  # one per output token
    prompt_logprobs: list[dict[int, float] | None] = field(default_factory=list)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def token_slice(self, start: int, count: int) -> list[int]:
        """Tokens start .. start + count of prompt + output + draft, without joining the
        lists when the slice lies inside one of them (a decode reads one output token)."""
        prompt = len(self.prompt_token_ids)
        if start >= prompt:
            first = start - prompt
            if first + count <= len(self.output_token_ids):
                return self.output_token_ids[first : first + count]
            return (self.output_token_ids + self.draft)[first : first + count]
        if start + count <= prompt:
            return self.prompt_token_ids[start : start + count]
        return (self.all_token_ids + self.draft)[start : start + count]

    @property
    def needs_prompt_logprobs(self) -> bool:
        """Asked for prompt log-probabilities and not all computed yet (the first prompt token
        has none: its entry is None)."""
        return self.params.prompt_logprobs is not None and len(self.prompt_logprobs) < len(
            self.prompt_token_ids
        )

    @property
    def sort_key(self) -> tuple[int, int]:
        return (self.priority, self.arrival)

    def propose_ngram(self, ngram: int, count: int) -> list[int]:
        """Prompt-lookup drafting: the tokens that followed the last earlier occurrence of the
        sequence's final `ngram` tokens (empty when there is none)."""
        tokens = self.all_token_ids
        if len(tokens) <= ngram:
            return []
        tail = tokens[-ngram:]
        for start in range(len(tokens) - ngram - 1, -1, -1):
            if tokens[start : start + ngram] == tail:
                return tokens[start + ngram : start + ngram + count]
        return []

    def check_stop(self, token: int) -> str | None:
        """Why the request ends after producing `token`, or None when it goes on."""
        produced = len(self.output_token_ids)
        if token in self.stop_ids and produced >= self.params.min_tokens:
            return "stop"
        if produced >= self.max_output:
            return "length"
        return None


@dataclass(slots=True)  # built for every request at every step: a frozen one costs 3x to make
class RequestOutput:
    """A request's progress after a step: new tokens (streaming) and all tokens so far.

    `text` is filled when the model folder has a tokenizer. With SamplingParams.output_kind
    "delta", token_ids and text hold only what is new since the request's previous output.
    """

    request_id: str
    prompt_token_ids: list[int]
    new_token_ids: list[int]
    token_ids: list[int]
    finished: bool
    finish_reason: str | None = None
    text: str = ""
    num_cached_tokens: int = 0
    ttft_ms: float | None = None  # device-clock ms from arrival to first token
    latency_ms: float | None = None  # device-clock ms from arrival to finish
    # With SamplingParams.logprobs: {token: log-probability} per token of token_ids, the
    # token's own first, then the most likely ones. With prompt_logprobs: the same per prompt
    # token (None for the first), in every output but a delta one's later outputs.
    logprobs: list[dict[int, float]] | None = None
    prompt_logprobs: list[dict[int, float] | None] | None = None
