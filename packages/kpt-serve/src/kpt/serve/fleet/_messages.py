"""What the router and its workers say to each other over kpt.wire (msgpack headers only).

Router -> worker (the worker's kpt.wire Server):
  ``fleet.submit``   casts: {rid, model, prompt (str | [int]), params {SamplingParams fields},
                     priority}
  ``fleet.abort``    casts: {rid}
  ``fleet.ping``     call:  {} -> the worker's latest stats
  ``fleet.shutdown`` cast:  {} (the worker stops at once; the router has moved its requests)
  ``fleet.horizon``  cast:  {until_ms (None: no more arrivals)} to step_clock="virtual" workers
Worker -> router (the router's inbox Server, through the worker's Client):
  ``fleet.hello``    call:  {worker_id, endpoint, pid, model, variant, device{...},
                     catalog {name: {max_model_len, vocab_size, has_tokenizer}},
                     memory_budget, step_clock} -> {ok}
  ``fleet.outputs``  cast:  {worker_id, outputs: [{rid, new, text, finished, reason, ...}],
                     clock_ms (virtual time: the chip's clock after the step)}
  ``fleet.clock``    cast:  {worker_id, clock_ms, stats{...}} a virtual-time worker reached
                     the horizon
  ``fleet.stats``    cast:  {worker_id, stats{...}, step_age_s, prefixes[...]} every heartbeat
                            interval (liveness too); prefixes: its cached prefix blocks' hashes
Unknown fields are ignored and missing ones take defaults, as everywhere on kpt.wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kpt.serve._sampling import SamplingParams

SUBMIT = "fleet.submit"
ABORT = "fleet.abort"
PING = "fleet.ping"
SHUTDOWN = "fleet.shutdown"
HELLO = "fleet.hello"
OUTPUTS = "fleet.outputs"
STATS = "fleet.stats"
HORIZON = "fleet.horizon"
CLOCK = "fleet.clock"

# A worker sends its stats this often; the router declares it dead after MISSED_HEARTBEATS
# intervals of silence (Paranoid Pirate: any traffic from it counts as liveness).
HEARTBEAT_S = 1.0
MISSED_HEARTBEATS = 3

_PARAM_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop_token_ids",
    "ignore_eos",
    "min_tokens",
    "stop",
)


def params_to_wire(params: SamplingParams) -> dict[str, Any]:
    out = {name: getattr(params, name) for name in _PARAM_FIELDS}
    out["stop_token_ids"] = list(params.stop_token_ids)
    out["stop"] = list(params.stop)
    return out


def params_from_wire(fields: Mapping[str, Any]) -> SamplingParams:
    """SamplingParams from a header map; unknown keys are ignored (newer routers)."""
    return SamplingParams(**{k: fields[k] for k in _PARAM_FIELDS if k in fields})


@dataclass
class WorkerStats:
    """A worker's load as its heartbeat reports it (EngineStats plus a measured speed)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_blocks_total: int = 0
    kv_blocks_used: int = 0
    kv_usage: float = 0.0
    prefix_hit_rate: float = 0.0
    num_preemptions: int = 0
    generated_tokens: int = 0
    prompt_tokens_computed: int = 0
    clock_ms: float = 0.0
    tokens_per_s: float = 0.0  # prompt + generated tokens per wall second, recent steps
    step_overhead_ms: float = 0.0  # fitted wall ms per step: overhead + per_token * tokens
    step_ms_per_token: float = 0.0
    steps_measured: int = 0
    loaded_models: list[str] = field(default_factory=list)  # of its catalog, loaded now
    model_loads: int = 0
    model_evictions: int = 0
    memory_used: int = 0  # bytes its loaded models hold (weights + KV pools)

    @classmethod
    def from_wire(cls, fields: Mapping[str, Any]) -> WorkerStats:
        known = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceSummary:
    """What the router needs of a worker's device (from kpt.hal's capabilities)."""

    name: str  # "cpu:0", "kpt_sim:0"
    kind: str  # "accelerator", "simulated", "host"
    vendor: str = ""
    model: str = ""
    memory_total: int = 0
    peak_flops: float = 0.0  # best of peak_flops, FLOP/s; 0 when unknown
    features: list[str] = field(default_factory=list)

    @classmethod
    def from_wire(cls, fields: Mapping[str, Any]) -> DeviceSummary:
        known = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__}
        return cls(**{"name": "?", "kind": "?", **known})

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)
