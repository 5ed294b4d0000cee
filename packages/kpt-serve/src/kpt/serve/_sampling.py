"""SamplingParams (what a request asks for) and the sampler that turns logits into tokens."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


class OutputKind(enum.StrEnum):
    """Which outputs a request gets from Engine.step(), as vLLM's RequestOutputKind.

    At steady decode, building every request's output at every step is most of the host's work
    (`benchmarks/profile_decode.py`); a caller that needs less asks for less.
    """

    CUMULATIVE = "cumulative"  # every step: the new tokens, and all tokens and text so far
    DELTA = "delta"  # every step: only what is new (token_ids and text are the new part)
    FINAL_ONLY = "final_only"  # one output, once the request finishes (LLM.generate's kind)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token and when to stop, as in vLLM.

    temperature 0 is greedy decoding. top_k 0 or -1 keeps every token; top_p 1.0 keeps the whole
    distribution. seed makes one request's samples reproducible whatever else is in the batch.
    Generation stops at max_tokens, at an EOS token (unless ignore_eos), at any of
    stop_token_ids (which is kept in the output, as EOS is), or once the output's text contains
    one of the `stop` strings (text is cut before it; the tokens are kept, as Hugging Face's
    stop_strings does).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: Sequence[int] = field(default_factory=tuple)
    ignore_eos: bool = False
    min_tokens: int = 0
    # Text that ends the request once the output's text contains it (needs the folder's
    # tokenizer). The token that completed it is kept in token_ids; text stops before it.
    stop: Sequence[str] = field(default_factory=tuple)
    output_kind: OutputKind | str = OutputKind.CUMULATIVE
    # Log-probabilities (log-softmax of the model's raw logits, as vLLM returns by default):
    # for each generated token, its own and those of the `logprobs` most likely tokens; for
    # each prompt token after the first, its own and the `prompt_logprobs` most likely.
    # None: none. A request with prompt_logprobs computes its whole prompt (no prefix cache).
    logprobs: int | None = None
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            problems.append(f"max_tokens={self.max_tokens!r} must be an int >= 1")
        if not self.temperature >= 0.0:
            problems.append(f"temperature={self.temperature!r} must be >= 0 (0 is greedy)")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p={self.top_p!r} must be in (0, 1]; 1 keeps every token")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            problems.append(f"top_k={self.top_k!r} must be an int >= 0 (0 or -1: no limit)")
        if self.seed is not None and not isinstance(self.seed, int):
            problems.append(f"seed={self.seed!r} must be an int or None")
        if not isinstance(self.min_tokens, int) or not 0 <= self.min_tokens <= self.max_tokens:
            problems.append(f"min_tokens={self.min_tokens!r} must be in [0, max_tokens]")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            problems.append(f"stop_token_ids={list(self.stop_token_ids)!r} must be token ids >= 0")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not isinstance(t, str) or not t for t in stop):
            problems.append(f"stop={list(stop)!r} must be non-empty strings")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 20
            ):
                problems.append(f"{name}={value!r} must be None or an int in [0, 20]")
        kinds = [k.value for k in OutputKind]
        if self.output_kind not in kinds:
            problems.append(f"output_kind={self.output_kind!r} must be one of {kinds}")
        if problems:
            raise ValueError("bad SamplingParams: " + "; ".join(problems))
        object.__setattr__(self, "output_kind", OutputKind(self.output_kind))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        object.__setattr__(self, "stop", stop)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """Picks one token per row of logits; greedy rows on the device, random rows per request.

    Each random request draws from its own torch.Generator (seeded from SamplingParams.seed, or
    from the engine's seed source), so its samples do not depend on its batch neighbours.
    """

    def sample(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None],
    ) -> list[int]:
        tokens: list[int] = [0] * len(params)
        greedy_rows = [i for i, p in enumerate(params) if p.greedy]
        if greedy_rows:
            rows = logits if len(greedy_rows) == len(params) else logits[greedy_rows]
            for i, token in zip(greedy_rows, rows.argmax(dim=-1).cpu().tolist(), strict=True):
                tokens[i] = token
        random_rows = [i for i, p in enumerate(params) if not p.greedy]
        if random_rows:
            probs = self._probabilities(
                logits[random_rows].float(), [params[i] for i in random_rows]
            )
            probs = probs.cpu()  # draws happen on the host, from each request's own generator
            for row, i in enumerate(random_rows):
                tokens[i] = int(torch.multinomial(probs[row], 1, generator=generators[i]))
        return tokens

    @staticmethod
    def _probabilities(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
        temperature = torch.tensor([p.temperature for p in params], device=logits.device)
        logits = logits / temperature[:, None]
        vocab = logits.shape[-1]
        if any(0 < p.top_k < vocab for p in params) or any(p.top_p < 1.0 for p in params):
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            ranks = torch.arange(vocab, device=logits.device)[None, :]
            top_k = torch.tensor(
                [p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=logits.device
            )
            drop = ranks >= top_k[:, None]
            sorted_probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
            top_p = torch.tensor([p.top_p for p in params], device=logits.device)
            # Keep the smallest set of tokens whose mass reaches top_p (the first always stays).
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
            drop = drop | (mass_before >= top_p[:, None])
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        return logits.softmax(dim=-1)
