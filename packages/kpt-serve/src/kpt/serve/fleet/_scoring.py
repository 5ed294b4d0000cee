"""How the router picks a worker: predicted completion time, with prefix affinity.

A worker's predicted time for a request comes from its measured step time (a fitted
`overhead + per_token * tokens` per engine step: the device's speed as the host sees it) at
the batch the request would join: a first step carrying its prompt (less what the worker's
prefix cache likely holds), then one decode step per output token, each sharing the step
with the worker's other requests. A worker short of KV blocks is penalised: the request would
wait for blocks or preempt others. Until a worker has measured its steps, the router falls
back to power-of-two-choices on queued work.

Prefix affinity is tracked by the router, as SGLang's cache-aware router does: for each
worker, an LRU set of the prompt prefixes it was sent (token prompts as chained hashes of
16-token blocks, text prompts as 64-character chunks), corrected by what the worker reports
its prefix cache holds (the same chained hashes, with each heartbeat): evicted token prefixes
are forgotten.
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
TIE_BAND = 1.1  # predicted times within 10 % of the best count as equal


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
    """The prefixes one worker likely holds, least recently used forgotten first.

    The router adds a request's keys when it sends the request (a guess: the worker will cache
    them once it computes the prompt). A worker whose KV blocks are named as the router's keys
    are (token prompts, 16-token blocks) reports what its prefix cache holds with each
    heartbeat (`report`): reported keys are known until a report leaves them out
    (evicted), and a guess no report holds two reports after it was sent is dropped.
    Text-prompt keys are the router's own (the worker hashes tokens): only the LRU forgets
    them.
    """

    def __init__(self, capacity: int = 8192) -> None:
        self.capacity = capacity
        # key -> the report count when it was sent (less one once reported); None: unchecked
        self._keys: OrderedDict[int, int | None] = OrderedDict()
        self._reports = 0

    def add(self, keys: Sequence[int], checkable: bool = True) -> None:
        stamp = self._reports if checkable else None
        for key in keys:
            self._keys[key] = stamp
            self._keys.move_to_end(key)
        self._trim()

    def report(self, held: Sequence[int]) -> None:
        """The worker's prefix cache holds these keys (most recently cached first)."""
        self._reports += 1
        held_set = set(held)
        for key, stamp in list(self._keys.items()):
            if stamp is not None and self._reports - stamp >= 2 and key not in held_set:
                del self._keys[key]
        for key in reversed(held):  # held now: dropped by the next report that lacks it
            self._keys[key] = self._reports - 1
            self._keys.move_to_end(key)
        self._trim()

    def _trim(self) -> None:
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


class StepTimeModel:
    """A worker's step time as `overhead_ms + per_token_ms * tokens in the step`, fitted by
    exponentially weighted least squares over its recent steps (the device's speed, as seen
    from the host, at the batch sizes it actually runs)."""

    def __init__(self, decay: float = 0.98) -> None:
        self.decay = decay
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self.steps = 0

    def add(self, tokens: int, ms: float) -> None:
        d = self.decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + tokens
        self._y = d * self._y + ms
        self._xx = d * self._xx + tokens * tokens
        self._xy = d * self._xy + tokens * ms
        self.steps += 1

    def fit(self) -> tuple[float, float]:
        """(overhead_ms, per_token_ms); per-token cost 0 until step sizes have varied."""
        if self._w == 0:
            return 0.0, 0.0
        spread = self._w * self._xx - self._x * self._x
        slope = (
            (self._w * self._xy - self._x * self._y) / spread if spread > 1e-6 * self._w**2 else 0.0
        )
        slope = max(slope, 0.0)
        intercept = max((self._y - slope * self._x) / self._w, 0.0)
        return intercept, slope


@dataclass(frozen=True)
class Candidate:
    """What scoring needs to know of one worker, at the moment of choosing."""

    worker_id: str
    queued_tokens: int  # prompt + output tokens still to compute for its in-flight requests
    num_inflight: int
    step_overhead_ms: float  # fitted step time: overhead + per_token * tokens in the step
    step_ms_per_token: float
    measured: bool  # False until the worker has reported fitted step times
    kv_usage: float
    matched_chunks: int  # leading prompt chunks it likely holds in its prefix cache
    chunk_tokens: int  # tokens per matched chunk
    max_num_seqs: int = 256
    max_batched_tokens: int = 2048


def _uncached(candidate: Candidate, prompt_len: int) -> int:
    cached = min(candidate.matched_chunks * candidate.chunk_tokens, max(prompt_len - 1, 0))
    return prompt_len - cached


def predicted_ttft_ms(candidate: Candidate, prompt_len: int) -> float | None:
    """Predicted ms to the request's first token on this worker; None while unmeasured.

    Continuous batching admits it at the next step unless every seat is taken: its prompt
    (less the cached prefix) runs in chunks of the step budget, beside one token of each
    request already running."""
    if not candidate.measured:
        return None
    batch = candidate.num_inflight
    new = _uncached(candidate, prompt_len)
    chunks = -(-new // candidate.max_batched_tokens)
    step = candidate.step_overhead_ms + candidate.step_ms_per_token * (batch + new / chunks)
    rounds = 1 + batch // candidate.max_num_seqs  # full seats: it waits a generation
    ms = rounds * chunks * step
    return ms * KV_FULL_PENALTY if candidate.kv_usage >= KV_FULL else ms


def predicted_ms(candidate: Candidate, prompt_len: int, max_tokens: int) -> float | None:
    """Predicted ms until the request finishes on this worker; None while unmeasured."""
    ttft = predicted_ttft_ms(candidate, prompt_len)
    if ttft is None:
        return None
    decode = candidate.step_overhead_ms + candidate.step_ms_per_token * (candidate.num_inflight + 1)
    rounds = 1 + candidate.num_inflight // candidate.max_num_seqs
    ms = ttft + rounds * (max_tokens - 1) * decode
    return ms


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
        # Predictions within TIE_BAND of the best are a tie (the fits are noisy): among those,
        # the worker holding more of the prompt's prefix, then the less loaded, wins.
        best = min(times)
        close = [(t, c) for t, c in zip(times, candidates, strict=True) if t <= best * TIE_BAND]
        return min(close, key=lambda tc: (-tc[1].matched_chunks, tc[1].num_inflight, tc[0]))[
            1
        ].worker_id


POLICIES = {cls.name: cls for cls in (RoundRobin, PowerOfTwo, PredictedTime)}


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(
            f"routing policy {name!r} is unknown; choose one of {', '.join(sorted(POLICIES))}"
        ) from None
