"""Distributed evaluation: worker processes summarize shards and stream summaries to an aggregator.

Messages over kpt-wire (msgpack headers, never pickle), protocol ``kpt-abtest/2``:

- ``summary`` (cast): ``{"worker": str, "seq": int, "arm": str, "summary": Summary.to_dict()}``.
  A summary covers only the values since the worker's previous one, so the aggregator just
  merges. ``seq`` numbers a worker's summaries 1, 2, 3, ...: one whose number was seen already
  is a replay, ignored and counted (version 1 had no ``seq`` and merged a replay again). A
  worker is bound to the connection it first spoke from (see ``_ledger.py``).
- ``sync`` (call): answered with ``{"received": int}``; workers send one every 256 casts so
  that their backlog stays bounded (backpressure).
- ``done`` (call): ``{"worker": str, "error": str | None, "sent": int}``, answered with
  ``{"merged": int, "missing": int}``. ZeroMQ keeps one connection's order and the server
  handles one message at a time, so when ``done`` is answered every summary the worker cast
  before it has been merged (or refused: ``missing`` counts what was sent and not merged).
- ``status`` (call): the aggregator's snapshot (arms, counts, intervals, decision, workers with
  their state: streaming, done, failed, or lost when its connection went silent first).

kpt-wire is the optional extra ``distributed``; it is imported only when this module is used.
Workers run where an executor puts them (``_executors.py``): local processes started as
``python -m kpt.abtest worker ENDPOINT --task module:function``, or Ray tasks (the ``ray``
extra). Either way the task is found by its import path and gets plain values, so nothing is
pickled to start a worker either.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import stats

from kpt.abtest._executors import FLUSH_INTERVAL_S, WorkerExecutor, WorkerSpec, executor_for
from kpt.abtest._executors import WorkerPool as WorkerPool  # where callers found them before
from kpt.abtest._executors import launch_workers as launch_workers
from kpt.abtest._ledger import MAX_WORKERS, Refused, SummaryLedger
from kpt.abtest._result import decide
from kpt.abtest._sequential import mixture_scale, normal_mixture_radius
from kpt.abtest._summary import Summary

PROTOCOL_NAME = "kpt-abtest/2"
_SYNC_EVERY = 256  # casts a worker sends before waiting for the aggregator to catch up


def _wire():
    try:
        import kpt.wire as wire
    except ImportError:
        raise ImportError(
            "distributed evaluation needs kpt-wire: pip install 'kpt-abtest[distributed]'"
        ) from None
    return wire


class Aggregator:
    """Merges the summaries workers stream in; serves ``status`` for ``kpt-abtest monitor``.

    The comparison of each arm against ``baseline`` uses an anytime-valid interval for the
    difference in means (normal mixture confidence sequence), so watching it live and stopping
    when it excludes zero keeps the error rate at ``alpha``.
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:0",
        *,
        baseline: str | None = None,
        alpha: float = 0.05,
        higher_is_better: bool = False,
        tuning_n: int = 10_000,
        heartbeat_interval: float = 1.0,
        max_workers: int = MAX_WORKERS,
        curve_secret_key: str | bytes | None = None,
        curve_public_key: str | bytes | None = None,
        authorized_keys: Any = None,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        wire = _wire()
        self.baseline = baseline
        self.alpha = alpha
        self.higher_is_better = higher_is_better
        self._mixture = mixture_scale(alpha, tuning_n)
        self._lock = threading.Lock()  # handlers run on the server thread; snapshot() anywhere
        self._ledger = SummaryLedger(max_workers)  # everything workers changed, checked first
        self._started = time.monotonic()
        self._done = threading.Condition(self._lock)
        # With CURVE keys it may bind an address other hosts reach (kpt-wire refuses without).
        self._server = wire.Server(
            endpoint, heartbeat_interval=heartbeat_interval, on_client_gone=self._on_client_gone,
            curve_secret_key=curve_secret_key, curve_public_key=curve_public_key,
            authorized_keys=authorized_keys,
        )  # fmt: skip
        self._server.register("summary", self._on_summary)
        self._server.register("done", self._on_done)
        self._server.register("sync", self._on_sync)
        self._server.register("status", lambda msg, client: self.snapshot())

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Aggregator:
        self._server.start()
        return self

    @property
    def endpoint(self) -> str:
        return self._server.endpoint

    def close(self, timeout: float = 5.0) -> None:
        self._server.close(timeout=timeout)

    def __enter__(self) -> Aggregator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- handlers (server thread) ------------------------------------------------------------
    def _on_summary(self, msg: Any, client: bytes) -> dict[str, str]:
        try:
            with self._lock:
                outcome = self._ledger.take_summary(msg.header, client, time.monotonic())
        except Refused as error:  # a cast's refusal reaches nobody: status counts it
            raise _wire().HandlerError("bad_summary", str(error)) from None
        return {"outcome": outcome}

    def _on_sync(self, msg: Any, client: bytes) -> dict[str, Any]:
        """Backpressure: a worker waits for this answer every few hundred casts."""
        with self._lock:
            return {"received": self._ledger.received}

    def _on_done(self, msg: Any, client: bytes) -> dict[str, Any]:
        try:
            with self._lock:
                answer = self._ledger.take_done(msg.header, client, time.monotonic())
                self._done.notify_all()
        except Refused as error:
            raise _wire().HandlerError("bad_done", str(error)) from None
        return answer

    def _on_client_gone(self, client: bytes) -> None:
        with self._lock:
            self._ledger.connection_gone(client, time.monotonic())

    # -- reading -----------------------------------------------------------------------------
    def wait_done(self, workers: int, timeout: float) -> bool:
        """Wait until ``workers`` workers have reported done; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._ledger.done_count() < workers:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(min(left, 0.1))
        return True

    def summaries(self) -> dict[str, Summary]:
        """A merged copy per arm (safe to keep while workers go on streaming)."""
        with self._lock:
            return {arm: Summary().merge(s) for arm, s in self._ledger.arms().items()}

    def snapshot(self) -> dict[str, Any]:
        """Everything the monitor shows, as msgpack/JSON-able plain types."""
        with self._lock:
            ledger = self._ledger
            merged = ledger.arms()
            arms = {arm: _describe(s) for arm, s in sorted(merged.items())}
            workers = ledger.workers(time.monotonic())
            received, replayed, refused = ledger.received, ledger.replayed, ledger.refused
            span = ledger.last_at - ledger.first_at
            baseline = self.baseline or (next(iter(sorted(merged))) if merged else None)
            comparisons = {
                arm: self._compare(merged[baseline], s)
                for arm, s in sorted(merged.items())
                if baseline is not None and arm != baseline and baseline in merged
            }
        decisions = {c["decision"] for c in comparisons.values()}
        return {
            "protocol": PROTOCOL_NAME,
            "baseline": baseline,
            "alpha": self.alpha,
            "higher_is_better": self.higher_is_better,
            "arms": arms,
            "comparisons": comparisons,
            "decision": _overall(decisions),
            "workers": workers,
            "summaries_received": received,
            "summaries_replayed": replayed,
            "summaries_refused": refused,
            "receive_rate_per_s": (received - 1) / span if span > 0 else None,
            "uptime_s": time.monotonic() - self._started,
        }

    def _compare(self, a: Summary, b: Summary) -> dict[str, Any]:
        effect = b.mean - a.mean
        relative = effect / a.mean if a.mean else math.nan
        if min(a.n, b.n) < 2:
            return {"effect": effect, "relative": relative, "ci": [None, None],
                    "fixed_ci": [None, None], "p_value": None, "decision": "continue"}  # fmt: skip
        va, vb = a.variance / a.n, b.variance / b.n
        se = math.sqrt(va + vb)
        n_eff = 2.0 / (1.0 / a.n + 1.0 / b.n)
        radius = float(normal_mixture_radius(se, n_eff, self.alpha, self._mixture))
        low, high = effect - radius, effect + radius
        # Welch's fixed-horizon numbers for reference (valid only at a planned stop).
        df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1)) if se > 0 else np.inf
        t_crit = float(stats.t.ppf(1 - self.alpha / 2, df))
        p_value = float(2 * stats.t.sf(abs(effect) / se, df)) if se > 0 else float(effect == 0)
        decision = decide(low, high, self.higher_is_better) if se > 0 else "continue"
        return {
            "effect": effect,
            "relative": relative,
            "ci": [low, high],
            "fixed_ci": [effect - t_crit * se, effect + t_crit * se],
            "p_value": p_value,
            "decision": "continue" if decision == "no_difference" else decision,
        }


def _describe(summary: Summary) -> dict[str, Any]:
    p50, p95, p99 = (float(v) for v in summary.quantile([0.5, 0.95, 0.99]))
    return {
        "n": summary.n,
        "mean": summary.mean,
        "sd": summary.std if summary.n > 1 else None,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        # p50/p95/p99 come from a KLL sketch: approximate once it compacted (rank error bound)
        "quantiles": "exact" if summary.sketch.exact else "approximate (KLL sketch)",
        "quantile_rank_error": summary.quantile_rank_error,
        "min": summary.min,
        "max": summary.max,
    }


def _overall(decisions: set[str]) -> str:
    if not decisions:
        return "waiting"
    if decisions == {"continue"}:
        return "continue"
    return ", ".join(sorted(decisions))


class Reporter:
    """Given to a worker's task: ``observe(arm, values)``; summaries are flushed in batches.

    An arm's summary is sent once it holds ``flush_every`` values, and everything pending is
    sent when ``flush_interval_s`` seconds have passed since the last flush (None: count only).
    """

    def __init__(
        self,
        client: Any,
        worker_id: str,
        *,
        flush_every: int = 1000,
        flush_interval_s: float | None = FLUSH_INTERVAL_S,
        sync_every: int = _SYNC_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if int(flush_every) != flush_every or flush_every < 1:
            raise ValueError(f"flush_every must be a whole number >= 1, got {flush_every!r}")
        if flush_interval_s is not None and not flush_interval_s > 0:
            raise ValueError(
                f"flush_interval_s must be > 0 seconds (or None for count-only flushes), "
                f"got {flush_interval_s!r}"
            )
        self.client = client
        self.worker_id = worker_id
        self.flush_every = int(flush_every)
        self.flush_interval_s = flush_interval_s
        self.sync_every = sync_every
        self._clock = clock
        self._last_flush = clock()
        self._pending: dict[str, Summary] = {}
        self.sent = 0

    def observe(self, arm: str, values: Any) -> None:
        summary = self._pending.setdefault(arm, Summary())
        summary.update(np.asarray(values, dtype=np.float64).reshape(-1))
        if summary.n >= self.flush_every:
            self._send(arm, self._pending.pop(arm))
        interval = self.flush_interval_s
        if interval is not None and self._clock() - self._last_flush >= interval:
            self.flush()

    def send_summary(self, arm: str, summary: Summary) -> None:
        """Send a summary built elsewhere (it must cover values not sent before)."""
        self._send(arm, summary)

    def flush(self) -> None:
        self._last_flush = self._clock()
        for arm in list(self._pending):
            self._send(arm, self._pending.pop(arm))

    def _send(self, arm: str, summary: Summary) -> None:
        if summary.n == 0:
            return
        header = {
            "worker": self.worker_id,
            "seq": self.sent + 1,
            "arm": arm,
            "summary": summary.to_dict(),
        }
        self.client.cast("summary", header)
        self.sent += 1
        if self.sent % self.sync_every == 0:
            # Without this a fast worker can queue more than the aggregator merges within
            # its heartbeat window, and the client would take the busy server for dead.
            self.client.call("sync", {"worker": self.worker_id})


def resolve_task(spec: str):
    """'package.module:function' -> the function, found by import (never unpickled)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"task {spec!r} must look like 'package.module:function'")
    try:
        task = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"task {spec!r} cannot be loaded: {error}") from None
    if not callable(task):
        raise ValueError(f"task {spec!r} is a {type(task).__name__}, not a function")
    return task


def run_worker(
    endpoint: str,
    task: str,
    shard: int,
    shards: int,
    *,
    worker_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    flush_every: int = 1000,
    flush_interval_s: float | None = FLUSH_INTERVAL_S,
    timeout: float = 30.0,
    curve_server_key: str | None = None,
    curve_public_key: str | None = None,
    curve_secret_key: str | None = None,
) -> int:
    """Run ``task(shard, shards, reporter, **options)`` and stream its summaries; returns sent.

    The curve_* keys (Z85 text) are for an aggregator with CURVE keys (evaluate_distributed
    with ``curve=True``)."""
    wire = _wire()
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    worker_id = worker_id or f"worker-{shard}-{os.getpid()}"
    keys = dict(curve_server_key=curve_server_key, curve_public_key=curve_public_key,
                curve_secret_key=curve_secret_key)  # fmt: skip
    with wire.Client(endpoint, timeout=timeout, **keys) as client:
        reporter = Reporter(
            client, worker_id, flush_every=flush_every, flush_interval_s=flush_interval_s
        )
        error = None
        try:
            resolve_task(task)(shard, shards, reporter, **dict(options or {}))
            reporter.flush()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
        client.call("done", {"worker": worker_id, "error": error, "sent": reporter.sent})
        if error is not None:
            raise RuntimeError(f"task {task} failed on shard {shard}: {error}")
        return reporter.sent


def evaluate_distributed(
    task: str,
    n_workers: int,
    *,
    options: Mapping[str, Any] | None = None,
    baseline: str | None = None,
    alpha: float = 0.05,
    higher_is_better: bool = False,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    endpoint: str = "tcp://127.0.0.1:0",
    on_start: Callable[[str], None] | None = None,
    flush_every: int = 1000,
    flush_interval_s: float | None = FLUSH_INTERVAL_S,
    executor: str | WorkerExecutor = "processes",
    ray_address: str | None = None,
    curve: bool = False,
) -> dict[str, Any]:
    """Start an aggregator and ``n_workers`` workers, wait for all, return the final snapshot.

    ``executor``: "processes" (local worker processes), "ray" (Ray tasks: the ``ray`` extra;
    uses the Ray instance this process has, else ``ray.init(address=ray_address)``), or an
    object with ``run(spec, timeout)`` (kpt.abtest._executors). ``env`` is the workers' extra
    environment (for Ray, the tasks' runtime_env). ``on_start(endpoint)`` is called once the
    aggregator listens (e.g. to print it for ``kpt-abtest monitor``). Workers send a summary
    every ``flush_every`` values per arm and at least every ``flush_interval_s`` seconds (None:
    by count only).

    ``curve=True``: the aggregator takes a fresh CURVE key pair and accepts only workers holding
    a second fresh pair, given to them with their config; with it ``endpoint`` may be an address
    other hosts reach (``tcp://10.0.0.5:0``), as Ray tasks on other nodes need.
    """
    runner = executor_for(executor, env=env, ray_address=ray_address)
    server_keys: dict[str, Any] = {}
    worker_keys: dict[str, str] = {}
    if curve:
        wire = _wire()
        server_public, server_secret = wire.generate_keys()
        worker_public, worker_secret = wire.generate_keys()
        server_keys = {"curve_secret_key": server_secret, "curve_public_key": server_public,
                       "authorized_keys": [worker_public]}  # fmt: skip
        worker_keys = {"curve_server_key": server_public.decode(),
                       "curve_public_key": worker_public.decode(),
                       "curve_secret_key": worker_secret.decode()}  # fmt: skip
    spec = WorkerSpec(
        endpoint, task, n_workers, dict(options or {}), flush_every, flush_interval_s, worker_keys
    )  # checks the options are plain values before anything starts
    with Aggregator(
        endpoint, baseline=baseline, alpha=alpha, higher_is_better=higher_is_better,
        **server_keys,
    ) as aggregator:  # fmt: skip
        if on_start is not None:
            on_start(aggregator.endpoint)
        failures = runner.run(replace(spec, endpoint=aggregator.endpoint), timeout)
        if failures:
            raise RuntimeError("workers failed:\n" + "\n".join(failures))
        if not aggregator.wait_done(n_workers, timeout=5.0):
            raise RuntimeError(f"only some of {n_workers} workers reported done")
        return aggregator.snapshot()
