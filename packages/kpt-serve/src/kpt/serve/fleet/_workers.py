"""The router's view of one worker: identity, device, last stats, in-flight requests."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kpt.serve.fleet._messages import DeviceSummary, WorkerStats
from kpt.serve.fleet._requests import FleetRequest
from kpt.serve.fleet._scoring import TOKEN_CHUNK, Candidate, PrefixIndex, predicted_ttft_ms
from kpt.wire import Client

_TPOT_SMOOTHING = 0.2
_CLOCK_WINDOW = 256  # finished requests whose device-clock TTFT/TPOT a worker keeps
MIN_MEASURED_STEPS = 4  # fitted step times from fewer steps are not trusted for routing
# Relative cost of serving a token in each dtype: the SLO chooser prefers the cheapest
# variant that meets the targets. Bytes per weight, as memory traffic dominates decoding.
DTYPE_COST = {
    "float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "float8_e4m3fn": 1.0,
    "float8_e4m3fnuz": 1.0, "int8": 1.0,
}  # fmt: skip


@dataclass(eq=False)
class WorkerState:
    worker_id: str
    endpoint: str
    pid: int
    model: str
    variant: str
    dtype: str
    device: DeviceSummary
    client: Client
    model_info: dict[str, Any]
    weights: str = ""  # the linear weights' storage ("int8", "float8_e4m3fn"; else = dtype)
    state: str = "ready"  # "ready" | "draining"
    stats: WorkerStats = field(default_factory=WorkerStats)
    last_heard: float = field(default_factory=time.monotonic)
    step_age_s: float = 0.0
    tpot_ms: float = 0.0  # smoothed wall ms per output token of its finished requests
    started_at: float = field(default_factory=time.time)
    max_num_seqs: int = 256
    max_batched_tokens: int = 2048
    inflight: dict[str, FleetRequest] = field(default_factory=dict)
    prefix: PrefixIndex = field(default_factory=PrefixIndex)
    catalog: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> its info
    memory_budget: int | None = None
    step_clock: str = "wall"
    # (ttft_ms, tpot_ms | None) of its recent finished requests on the worker's own clock:
    # simulated time on a simulated chip.
    device_times: deque = field(default_factory=lambda: deque(maxlen=_CLOCK_WINDOW))

    @classmethod
    def from_hello(cls, header: dict[str, Any], client: Client) -> WorkerState:
        dtype = str(header.get("dtype", ""))
        model = str(header.get("model", ""))
        info = {
            "max_model_len": header.get("max_model_len"),
            "vocab_size": header.get("vocab_size"),
            "has_tokenizer": bool(header.get("has_tokenizer")),
        }
        catalog = {str(k): dict(v) for k, v in (header.get("catalog") or {}).items()}
        state = cls(
            worker_id=str(header["worker_id"]),
            endpoint=str(header["endpoint"]),
            pid=int(header.get("pid", 0)),
            model=str(header.get("model", "")),
            variant=str(header.get("variant", "default")),
            dtype=dtype,
            weights=str(header.get("weights") or dtype),
            device=DeviceSummary.from_wire(header.get("device") or {}),
            client=client,
            max_num_seqs=int(header.get("max_num_seqs") or 256),
            max_batched_tokens=int(header.get("max_num_batched_tokens") or 2048),
            model_info=info,
            catalog=catalog or {model: info},
            memory_budget=header.get("memory_budget"),
            step_clock=str(header.get("step_clock") or "wall"),
        )
        state.stats.loaded_models = [model]  # a worker registers with its first model loaded
        return state

    def serves(self, model: str) -> bool:
        return model in self.catalog

    def has_loaded(self, model: str) -> bool:
        return model in self.stats.loaded_models

    def note_loading(self, model: str) -> None:
        """The router sent it a request for `model`: it is loading it (until stats say)."""
        if model not in self.stats.loaded_models:
            self.stats.loaded_models = [*self.stats.loaded_models, model]

    def observe_device_times(self, request: FleetRequest) -> None:
        if request.device_ttft_ms is not None:
            self.device_times.append((request.device_ttft_ms, request.device_tpot_ms))

    def clock_summary(self) -> dict[str, Any]:
        """Its recent requests' TTFT and TPOT on its own clock (simulated on a simulated chip)."""
        ttfts = sorted(t for t, _ in self.device_times)
        tpots = sorted(p for _, p in self.device_times if p is not None)
        return {
            "simulated": self.device.kind == "simulated",
            "requests": len(ttfts),
            "ttft_ms": _quantiles(ttfts),
            "tpot_ms": _quantiles(tpots),
        }

    @property
    def cost(self) -> float:
        return DTYPE_COST.get(self.weights or self.dtype, 4.0)

    def update_stats(self, header: dict[str, Any], now: float) -> None:
        self.stats = WorkerStats.from_wire(header.get("stats") or {})
        held = header.get("prefixes")
        if type(held) is list and all(type(key) is int for key in held):
            self.prefix.report(held)
        self.stats.loaded_models = [str(m) for m in self.stats.loaded_models]
        self.step_age_s = float(header.get("step_age_s") or 0.0)
        self.last_heard = now

    def observe_tpot(self, tpot_ms: float) -> None:
        old = self.tpot_ms
        self.tpot_ms = (
            tpot_ms if old == 0 else (1 - _TPOT_SMOOTHING) * old + _TPOT_SMOOTHING * tpot_ms
        )

    def queued_tokens(self) -> int:
        return sum(r.remaining_tokens() for r in self.inflight.values())

    def candidate(self, keys: list[int], chunk_tokens: int) -> Candidate:
        return Candidate(
            worker_id=self.worker_id,
            queued_tokens=self.queued_tokens(),
            num_inflight=len(self.inflight),
            step_overhead_ms=self.stats.step_overhead_ms,
            step_ms_per_token=self.stats.step_ms_per_token,
            measured=self.stats.steps_measured >= MIN_MEASURED_STEPS,
            kv_usage=self.stats.kv_usage,
            matched_chunks=self.prefix.match(keys),
            chunk_tokens=chunk_tokens,
            max_num_seqs=self.max_num_seqs,
            max_batched_tokens=self.max_batched_tokens,
        )

    def predicted_ttft_ms(self, prompt_len: int, keys: list[int]) -> float:
        """Time until the request's first token: the queue ahead and its own prompt."""
        ms = predicted_ttft_ms(self.candidate(keys, TOKEN_CHUNK), prompt_len)
        return float("inf") if ms is None else ms

    def describe(self) -> dict[str, Any]:
        """The worker as GET /v1/fleet lists it."""
        stats = self.stats
        return {
            "id": self.worker_id,
            "model": self.model,
            "variant": self.variant,
            "dtype": self.dtype,
            "weights": self.weights or self.dtype,
            "device": self.device.name,
            "device_kind": self.device.kind,
            "device_model": self.device.model,
            "pid": self.pid,
            "endpoint": self.endpoint,
            "state": self.state,
            "load": {
                "inflight": len(self.inflight),
                "running": stats.num_running,
                "waiting": stats.num_waiting,
                "kv_usage": stats.kv_usage,
                "prefix_hit_rate": stats.prefix_hit_rate,
                "tokens_per_s": round(stats.tokens_per_s, 1),
                "step_ms": round(stats.step_overhead_ms, 3),
                "step_ms_per_token": round(stats.step_ms_per_token, 4),
                "steps_measured": stats.steps_measured,
            },
            "heard_s_ago": round(time.monotonic() - self.last_heard, 3),
            "models": {
                "catalog": sorted(self.catalog),
                "loaded": list(stats.loaded_models),
                "loads": stats.model_loads,
                "evictions": stats.model_evictions,
                "memory_used": stats.memory_used,
                "memory_budget": self.memory_budget,
            },
            "step_clock": self.step_clock,
            "clock": self.clock_summary(),
        }


def _quantiles(values: list[float]) -> dict[str, float] | None:
    """mean, p50 and p99 of sorted values (nearest rank); None without any."""
    if not values:
        return None
    n = len(values)
    return {
        "mean": round(sum(values) / n, 4),
        "p50": round(values[(n - 1) // 2], 4),
        "p99": round(values[min(n - 1, int(0.99 * n))], 4),
    }
