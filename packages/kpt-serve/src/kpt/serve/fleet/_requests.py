"""One request as the router sees it: where it runs, what it streamed, its wall-clock timing."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kpt.serve._sampling import SamplingParams
from kpt.serve.fleet._scoring import prompt_tokens


@dataclass(frozen=True)
class Slo:
    """A request class's targets in wall-clock ms; None leaves that one free."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def met_by(self, ttft_ms: float, tpot_ms: float) -> bool:
        return (self.ttft_ms is None or ttft_ms <= self.ttft_ms) and (
            self.tpot_ms is None or tpot_ms <= self.tpot_ms
        )


@dataclass(frozen=True)
class Delta:
    """What one step added to a request: new token ids and text, and whether it is done."""

    new_token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None = None
    error: str | None = None
    worker_id: str | None = None
    # "invalid_request": the worker refused the request (the caller's fault, HTTP 400);
    # "unavailable": no worker could serve it (HTTP 503).
    error_code: str | None = None


@dataclass(eq=False)
class FleetRequest:
    request_id: str
    model: str
    variant: str | None
    prompt: str | list[int]
    params: SamplingParams
    priority: int
    slo: Slo | None
    on_delta: Callable[[Delta], None]
    keys: list[int]  # prefix keys of the prompt (see _scoring.prefix_keys)
    token_ids: list[int] = field(default_factory=list)  # streamed so far, across attempts
    text: str = ""
    prompt_ids: list[int] | None = None  # the tokenized prompt, once a worker reported it
    worker_id: str | None = None
    attempt: int = -1
    current_prompt: str | list[int] = ""
    current_params: SamplingParams | None = None
    workers_tried: list[str] = field(default_factory=list)
    finished: bool = False
    finish_reason: str | None = None
    error: str | None = None
    parked_since: float | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    # On the fleet's virtual clock, s (a virtual-time run): then submitted_at, token_times,
    # first_token_at and finished_at are virtual seconds too.
    arrival_ms: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    token_times: list[float] = field(default_factory=list)  # arrival of each streamed delta
    # The finishing worker's own clock (simulated ms on a simulated chip): its engine's TTFT
    # and latency for the last attempt, over the tokens that attempt produced.
    device_ttft_ms: float | None = None
    device_latency_ms: float | None = None
    attempt_first_token: int = 0  # len(token_ids) when the current attempt started
    chip: str | None = None  # the finishing worker's device model, e.g. "H100 SXM5 80GB"

    def __post_init__(self) -> None:
        self.current_prompt = self.prompt
        self.current_params = self.params

    @property
    def attempt_id(self) -> str:
        return f"{self.request_id}.{self.attempt}"

    def new_attempt(self, worker_id: str) -> None:
        self.attempt += 1
        self.worker_id = worker_id
        self.workers_tried.append(worker_id)
        self.attempt_first_token = len(self.token_ids)

    def resume_from_streamed(self) -> None:
        """Its worker died: the next attempt restarts from the prompt plus what was streamed."""
        done = len(self.token_ids)
        if done and self.prompt_ids is not None:
            self.current_prompt = self.prompt_ids + self.token_ids
            self.current_params = dataclasses.replace(
                self.params,
                max_tokens=self.params.max_tokens - done,
                min_tokens=max(0, self.params.min_tokens - done),
            )
        self.worker_id = None

    def take_output(self, item: dict[str, Any], worker_id: str, now: float) -> Delta:
        """Record one output item from the worker and make the delta to hand on."""
        if self.prompt_ids is None and item.get("prompt_ids") is not None:
            self.prompt_ids = [int(t) for t in item["prompt_ids"]]
        new = [int(t) for t in item.get("new") or []]
        text = str(item.get("text") or "")
        if new:
            self.token_ids.extend(new)
            self.text += text
            self.token_times.append(now)
            if self.first_token_at is None:
                self.first_token_at = now
        finished = bool(item.get("finished"))
        if finished:
            self.finished = True
            self.finished_at = now
            self.finish_reason = item.get("reason")
            self.error = item.get("error")
            if item.get("ttft_ms") is not None:
                self.device_ttft_ms = float(item["ttft_ms"])
            if item.get("latency_ms") is not None:
                self.device_latency_ms = float(item["latency_ms"])
        code = "invalid_request" if self.error else None
        return Delta(new, text, finished, self.finish_reason, self.error, worker_id, code)

    def deliver(self, delta: Delta) -> None:
        self.on_delta(delta)

    def fail(self, message: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.finished_at = time.monotonic()
        self.finish_reason = "error"
        self.error = message
        self.on_delta(Delta([], "", True, "error", message, self.worker_id, "unavailable"))

    # --- timing, wall-clock seconds at the router ----------------------------------------

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.submitted_at

    @property
    def e2e_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.submitted_at

    @property
    def tpot_ms(self) -> float | None:
        """Mean ms per output token after the first."""
        if self.first_token_at is None or self.finished_at is None or len(self.token_ids) < 2:
            return None
        return 1000.0 * (self.finished_at - self.first_token_at) / (len(self.token_ids) - 1)

    @property
    def device_tpot_ms(self) -> float | None:
        """Mean ms per output token after the first on the finishing worker's clock."""
        tokens = len(self.token_ids) - self.attempt_first_token
        if self.device_ttft_ms is None or self.device_latency_ms is None or tokens < 2:
            return None
        return (self.device_latency_ms - self.device_ttft_ms) / (tokens - 1)

    def served_by(self) -> dict[str, Any]:
        """Where it ran and how long it took there: the `kpt` field of API responses."""
        return {
            "workers": list(self.workers_tried),
            "chip": self.chip,
            "device_ttft_ms": self.device_ttft_ms,
            "device_tpot_ms": self.device_tpot_ms,
        }

    def inter_token_s(self) -> list[float]:
        times = self.token_times
        return [b - a for a, b in itertools.pairwise(times)]

    def remaining_tokens(self) -> int:
        """Tokens this request still has to compute: its prompt if not started, plus outputs."""
        prompt = 0 if self.token_ids else prompt_tokens(self.current_prompt)
        return prompt + max(self.params.max_tokens - len(self.token_ids), 0)
