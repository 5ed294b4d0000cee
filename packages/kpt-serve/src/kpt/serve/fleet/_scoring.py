"""How the router picks a worker: predicted completion time, with prefix affinity.

A worker's predicted time for a request is the work queued ahead of it plus the request's own
work (its prompt less what the worker's prefix cache likely holds, plus its output tokens),
divided by the worker's measured speed in tokens per second. A worker short of KV blocks is
penalised: the request would wait for blocks or preempt others. Until a worker has measured
its speed (its first steps), the router falls back to power-of-two-choices on queued work.

Prefix affinity is tracked by the router itself, as SGLang's cache-aware router does: for each
worker, an LRU set of the prompt prefixes it was sent (token prompts as chained hashes of
16-token blocks, text prompts as 64-character chunks). The worker's own prefix cache may have
evicted some; the worker's reported hit rate tells how often the guess holds.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

TOKEN_CHUNK = 16  # tokens per prefix key: the engine's default KV block size
TEXT_CHUNK = 64  # characters per prefix key for text prompts (about 16 tokens)
CHARS_PER_TOKEN = 4  # a text prompt's length in tokens, guessed before tokenizing
KV_FULL = 0.95  # KV usage above which a worker is treated as full
KV_FULL_PENALTY = 4.0  # a full worker's predicted time is multiplied by this


def prefix_keys(prompt: str | Sequence[int]) -> list[int]:
    """Chained hashes of the prompt's whole chunks: key i names the prefix up to chunk i."""
    keys: list[int] = []
    parent = 0
    if isinstance(prompt, str):
        chunks = [prompt[i : i + TEXT_CHUNK] for i in range(0, len(prompt), TEXT_CHUNK)]
        chunks = [c for c in chunks if len(c) == TEXT_CHUNK]
    else:
        ids = list(prompt)
        chunks = [
            tuple(ids[i : i + TOKEN_CHUNK])
            for i in range(0, len(ids) - TOKEN_CHUNK + 1, TOKEN_CHUNK)
        ]
    for chunk in chunks:
        parent = hash((parent, chunk))
        keys.append(parent)
    return keys


def prompt_tokens(prompt: str | Sequence[int]) -> int:
    return -(-len(prompt) // CHARS_PER_TOKEN) if isinstance(prompt, str) else len(prompt)


class PrefixIndex:
    """The prefixes one worker was sent, least recently used forgotten first."""

    def __init__(self, capacity: int = 8192) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[int, None] = OrderedDict()

    def add(self, keys: Sequence[int]) -> None:
        for key in keys:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def match(self, keys: Sequence[int]) -> int:
        """How many leading keys this worker holds (chunks of the prompt likely cached)."""
        count = 0
        for key in keys:
            if key not in self._keys:
                break
            count += 1
        return count

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True)
class Candidate:
    """What scoring needs to know of one worker, at the moment of choosing."""

    worker_id: str
    queued_tokens: int  # prompt + output tokens still to compute for its in-flight requests
    num_inflight: int
    tokens_per_s: float  # measured; 0 until its first steps
    kv_usage: float
    matched_chunks: int  # leading prompt chunks it likely holds in its prefix cache
    chunk_tokens: int  # tokens per matched chunk


def predicted_ms(candidate: Candidate, prompt_len: int, max_tokens: int) -> float | None:
    """Predicted ms until the request finishes on this worker; None while its speed is unknown."""
    if candidate.tokens_per_s <= 0:
        return None
    cached = min(candidate.matched_chunks * candidate.chunk_tokens, max(prompt_len - 1, 0))
    work = candidate.queued_tokens + (prompt_len - cached) + max_tokens
    ms = 1000.0 * work / candidate.tokens_per_s
    return ms * KV_FULL_PENALTY if candidate.kv_usage >= KV_FULL else ms


class Policy:
    """Picks one worker among candidates; `name` is how configs and metrics call it."""

    name = "policy"

    def choose(self, candidates: Sequence[Candidate], prompt_len: int, max_tokens: int) -> str:
        raise NotImplementedError


class RoundRobin(Policy):
    name = "round_robin"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates, prompt_len, max_tokens):
        ordered = sorted(candidates, key=lambda c: c.worker_id)
        self._turn += 1
        return ordered[self._turn % len(ordered)].worker_id


class PowerOfTwo(Policy):
    """Two workers at random, the one with less queued work (Ray Serve's default)."""

    name = "p2c"

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    def choose(self, candidates, prompt_len, max_tokens):
        if len(candidates) == 1:
            return candidates[0].worker_id
        a, b = self._random.sample(list(candidates), 2)
        return min((a, b), key=lambda c: (c.queued_tokens, c.num_inflight)).worker_id


class PredictedTime(Policy):
    """Least predicted completion time; power-of-two-choices while any speed is unknown."""

    name = "predicted"

    def __init__(self, seed: int | None = None) -> None:
        self._fallback = PowerOfTwo(seed)

    def choose(self, candidates, prompt_len, max_tokens):
        times = [predicted_ms(c, prompt_len, max_tokens) for c in candidates]
        if any(t is None for t in times):
            # An unmeasured worker with the prompt's prefix still wins: the prefix is worth
            # more than a guess at its speed. Otherwise the fallback spreads the load.
            best = max(candidates, key=lambda c: c.matched_chunks)
            if (
                best.matched_chunks > 0
                and best.num_inflight <= min(c.num_inflight for c in candidates) + 2
            ):
                return best.worker_id
            return self._fallback.choose(candidates, prompt_len, max_tokens)
        return min(zip(times, candidates, strict=True), key=lambda tc: tc[0])[1].worker_id


POLICIES = {cls.name: cls for cls in (RoundRobin, PowerOfTwo, PredictedTime)}


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(
            f"routing policy {name!r} is unknown; choose one of {', '.join(sorted(POLICIES))}"
        ) from None
