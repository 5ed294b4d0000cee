"""Prometheus metrics of a fleet, in one registry owned by one FleetMetrics object.

Latencies are wall-clock seconds measured at the router (from the request's arrival to its
first token, between tokens, to its end), labelled by model and by the worker that finished it.
Worker gauges come from the workers' heartbeats. The `device_` histograms are the same
latencies on each worker's own clock, labelled by chip: simulated time on a simulated chip,
so a fleet of kpt_sim workers reports TTFT and TPOT per simulated chip.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds; as vLLM's buckets, from sub-millisecond steps to minute-long requests.
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
TOKEN_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
)
E2E_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class FleetMetrics:
    """Histograms of request latency and gauges of worker load; `render()` is /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        by_worker = ["model", "worker"]
        self.ttft = Histogram(
            "kpt_serve_time_to_first_token_seconds",
            "Arrival to first token.",
            by_worker,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "kpt_serve_time_per_output_token_seconds",
            "Mean time per output token after the first, per request.",
            by_worker,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "kpt_serve_inter_token_latency_seconds",
            "Time between streamed deltas.",
            by_worker,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "kpt_serve_e2e_request_latency_seconds",
            "Arrival to last token.",
            by_worker,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "kpt_serve_requests",
            "Finished requests by reason.",
            ["model", "finish_reason"],
            registry=r,
        )
        self.generated = Counter(
            "kpt_serve_generation_tokens", "Output tokens streamed.", by_worker, registry=r
        )
        self.failovers = Counter(
            "kpt_serve_failovers", "Requests moved off a dead worker.", ["model"], registry=r
        )
        self.workers_gone = Counter(
            "kpt_serve_workers_removed",
            "Workers taken out of the fleet.",
            ["model", "reason"],
            registry=r,
        )
        self.running = Gauge(
            "kpt_serve_num_requests_running",
            "Requests in the worker's batch.",
            by_worker,
            registry=r,
        )
        self.waiting = Gauge(
            "kpt_serve_num_requests_waiting",
            "Requests queued in the worker.",
            by_worker,
            registry=r,
        )
        self.kv_usage = Gauge(
            "kpt_serve_kv_cache_usage_ratio", "Share of KV blocks in use.", by_worker, registry=r
        )
        self.prefix_hit = Gauge(
            "kpt_serve_prefix_cache_hit_rate",
            "Prompt tokens served from the prefix cache.",
            by_worker,
            registry=r,
        )
        self.tokens_per_s = Gauge(
            "kpt_serve_worker_tokens_per_second",
            "Measured prompt+output tokens per second.",
            by_worker,
            registry=r,
        )
        by_chip = ["model", "worker", "chip"]
        self.device_ttft = Histogram(
            "kpt_serve_device_time_to_first_token_seconds",
            "Arrival to first token on the worker's clock (simulated on a simulated chip).",
            by_chip,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.device_tpot = Histogram(
            "kpt_serve_device_time_per_output_token_seconds",
            "Time per output token after the first on the worker's clock.",
            by_chip,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.models_loaded = Gauge(
            "kpt_serve_models_loaded",
            "Models loaded on the worker now.",
            ["worker"],
            registry=r,
        )
        self.model_loads = Gauge(
            "kpt_serve_model_loads",
            "Models the worker has loaded since it started (on demand).",
            ["worker"],
            registry=r,
        )
        self.model_evictions = Gauge(
            "kpt_serve_model_evictions",
            "Models the worker evicted to stay within its memory budget.",
            ["worker"],
            registry=r,
        )
        self.parked = Gauge(
            "kpt_serve_num_requests_parked",
            "Requests waiting at the router for a worker.",
            registry=r,
        )

    def observe_request(self, request: Any, worker: Any = None) -> None:
        labels = (request.model, request.worker_id or "none")
        if worker is not None and request.device_ttft_ms is not None:
            chip = (*labels, worker.device.model or worker.device.name)
            self.device_ttft.labels(*chip).observe(request.device_ttft_ms / 1000.0)
            if request.device_tpot_ms is not None:
                self.device_tpot.labels(*chip).observe(request.device_tpot_ms / 1000.0)
        self.requests.labels(request.model, request.finish_reason or "unknown").inc()
        if request.ttft_s is not None:
            self.ttft.labels(*labels).observe(request.ttft_s)
        if request.tpot_ms is not None:
            self.tpot.labels(*labels).observe(request.tpot_ms / 1000.0)
        for gap in request.inter_token_s():
            self.itl.labels(*labels).observe(gap)
        if request.e2e_s is not None:
            self.e2e.labels(*labels).observe(request.e2e_s)
        if request.token_ids:
            self.generated.labels(*labels).inc(len(request.token_ids))

    def observe_worker(self, worker: Any) -> None:
        labels = (worker.model, worker.worker_id)
        stats = worker.stats
        self.running.labels(*labels).set(stats.num_running)
        self.waiting.labels(*labels).set(stats.num_waiting)
        self.kv_usage.labels(*labels).set(stats.kv_usage)
        self.prefix_hit.labels(*labels).set(stats.prefix_hit_rate)
        self.tokens_per_s.labels(*labels).set(stats.tokens_per_s)
        self.models_loaded.labels(worker.worker_id).set(len(stats.loaded_models))
        self.model_loads.labels(worker.worker_id).set(stats.model_loads)
        self.model_evictions.labels(worker.worker_id).set(stats.model_evictions)

    def observe_worker_gone(self, worker: Any, reason: str) -> None:
        kind = reason.split(" ")[0]  # "process", "silent", "no", "scaled": a small label set
        self.workers_gone.labels(worker.model, kind).inc()
        for gauge in (
            self.running,
            self.waiting,
            self.kv_usage,
            self.prefix_hit,
            self.tokens_per_s,
        ):
            try:
                gauge.remove(worker.model, worker.worker_id)
            except KeyError:
                pass
        for gauge in (self.models_loaded, self.model_loads, self.model_evictions):
            try:
                gauge.remove(worker.worker_id)
            except KeyError:
                pass

    def observe_failover(self, model: str) -> None:
        self.failovers.labels(model).inc()

    def render(self, parked: int = 0) -> bytes:
        self.parked.set(parked)
        return generate_latest(self.registry)
