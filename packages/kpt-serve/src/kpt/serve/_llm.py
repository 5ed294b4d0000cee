"""LLM: the offline entry point, generate() over a list of prompts, and stream()."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from kpt.serve._engine import Engine, EngineConfig
from kpt.serve._request import RequestOutput
from kpt.serve._sampling import OutputKind, SamplingParams

Prompt = str | Sequence[int]


class LLM:
    """A model folder loaded on one device: `LLM(model_dir, device=None).generate(prompts, params)`.

    device None picks the best device kpt.hal finds (hal.select()); "cuda", "kpt_sim", "cpu"
    or "cuda:1" name one. Keyword arguments are EngineConfig fields.
    """

    def __init__(
        self, model_dir: str | Path, device: str | torch.device | None = None, **engine_config
    ) -> None:
        self.engine = Engine(model_dir, device, EngineConfig(**engine_config))

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        priorities: Sequence[int] | None = None,
    ) -> list[RequestOutput]:
        """One finished output per prompt, in the order given."""
        finals: dict[str, RequestOutput] = {}
        # Only the final outputs are read: the engine builds no others (OutputKind.FINAL_ONLY).
        order = self._add(prompts, params, priorities, kind=OutputKind.FINAL_ONLY)
        for output in self._drain(order):
            if output.finished:
                finals[output.request_id] = output
        return [finals[request_id] for request_id in order]

    def stream(
        self,
        prompts: Prompt | Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        priorities: Sequence[int] | None = None,
    ) -> Iterator[RequestOutput]:
        """Outputs as tokens are produced: each carries new_token_ids and the tokens so far."""
        yield from self._drain(self._add(prompts, params, priorities))

    def _add(self, prompts, params, priorities, kind: OutputKind | None = None) -> list[str]:
        if isinstance(prompts, str) or (
            isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]
        prompts = list(prompts)
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        params = list(params)
        if kind is not None:
            params = [dataclasses.replace(p, output_kind=kind) for p in params]
        priorities = list(priorities) if priorities is not None else [0] * len(prompts)
        if not len(params) == len(priorities) == len(prompts):
            raise ValueError(
                f"{len(prompts)} prompts but {len(params)} SamplingParams and "
                f"{len(priorities)} priorities; give one each, or one SamplingParams for all"
            )
        return [
            self.engine.add_request(prompt, p, priority=priority)
            for prompt, p, priority in zip(prompts, params, priorities, strict=True)
        ]

    def _drain(self, request_ids: list[str]) -> Iterator[RequestOutput]:
        pending = set(request_ids)
        try:
            while pending:
                if not self.engine.has_unfinished:
                    raise RuntimeError(
                        f"requests {sorted(pending)[:5]} were dropped by the engine unfinished; "
                        "this is a bug in kpt-serve, please report it"
                    )
                for output in self.engine.step():
                    if output.request_id in pending:
                        yield output
                        if output.finished:
                            pending.discard(output.request_id)
        finally:  # a caller that stops iterating early must not leave requests holding blocks
            for request_id in pending:
                self.engine.abort(request_id)
