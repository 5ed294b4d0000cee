"""The router: workers register with it, it places requests, streams deltas back, fails over.

It owns one kpt.wire Server, its inbox, where workers say hello, stream their outputs and send
heartbeats, and one kpt.wire Client per worker to cast requests to. A monitor thread declares a
worker dead when its process exits or after MISSED_HEARTBEATS silent intervals, and re-sends
its in-flight requests elsewhere: restarted from the prompt plus the tokens already streamed,
so greedy requests finish with the tokens an uninterrupted run gives and none is lost.
Requests for a model with no live worker wait (parked) until one registers or they time out.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kpt.serve._sampling import SamplingParams
from kpt.serve.fleet._launcher import WorkerHandle
from kpt.serve.fleet._messages import (
    ABORT,
    CLOCK,
    HEARTBEAT_S,
    HELLO,
    MISSED_HEARTBEATS,
    OUTPUTS,
    STATS,
    SUBMIT,
    params_to_wire,
)
from kpt.serve.fleet._network import FleetKeys, client_options, server_options
from kpt.serve.fleet._requests import Delta, FleetRequest, Slo
from kpt.serve.fleet._scoring import TOKEN_CHUNK, Candidate, make_policy, prefix_keys, prompt_tokens
from kpt.serve.fleet._virtual_time import FleetClock
from kpt.serve.fleet._workers import WorkerState
from kpt.wire import Client, HandlerError, Message, Server

log = logging.getLogger("kpt.serve.fleet.router")

MAX_ATTEMPTS = 3  # workers a request may outlive before it fails (a request that kills them)


class NoWorkerError(RuntimeError):
    """No worker serves the model asked for (unknown model, or every worker gone too long)."""


class Router:
    """Places requests on workers. Thread-safe; callbacks run on the router's threads."""

    def __init__(
        self,
        *,
        policy: str = "predicted",
        inbox: str = "tcp://127.0.0.1:0",
        heartbeat_s: float = HEARTBEAT_S,
        park_timeout_s: float = 120.0,
        hang_timeout_s: float = 120.0,
        metrics: Any = None,
        keys: FleetKeys | None = None,
    ) -> None:
        """keys: the fleet's CURVE pair, needed to bind `inbox` beyond loopback; the router
        then admits only workers that hold it and presents it to theirs."""
        self.policy = make_policy(policy)
        self.heartbeat_s = heartbeat_s
        self.park_timeout_s = park_timeout_s
        self.hang_timeout_s = hang_timeout_s
        self.metrics = metrics  # FleetMetrics, or None
        self._keys = keys
        self._server = Server(inbox, heartbeat_interval=heartbeat_s, **server_options(keys))
        self._server.register(HELLO, self._on_hello)
        self._server.register(OUTPUTS, self._on_outputs)
        self._server.register(STATS, self._on_stats)
        self._server.register(CLOCK, self._on_clock)
        self._lock = threading.RLock()
        self._workers: dict[str, WorkerState] = {}
        self._processes: dict[str, WorkerHandle] = {}
        self._requests: dict[str, FleetRequest] = {}  # attempt id -> request
        self._parked: list[FleetRequest] = []
        self._expected_models: set[str] = set()
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="kpt-serve-router", daemon=True)
        self.num_failovers = 0
        self.on_worker_gone: list[Callable[[WorkerState, str], None]] = []
        self.on_request_done: list[Callable[[FleetRequest], None]] = []
        self.clock = FleetClock(self.workers)  # virtual time, for step_clock="virtual" workers

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Router:
        self._server.start()
        self._monitor.start()
        return self

    @property
    def inbox_endpoint(self) -> str:
        return self._server.endpoint

    def close(self) -> None:
        self._stop.set()
        if self._monitor.is_alive():
            self._monitor.join(5)
        self._server.close()
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
            pending = list(self._requests.values()) + self._parked
            self._requests.clear()
            self._parked.clear()
        for worker in workers:
            worker.client.close()
        for request in {id(r): r for r in pending}.values():
            request.fail("the router is shutting down")

    def expect(self, model: str) -> None:
        """Requests for `model` wait for its workers (still loading) instead of failing."""
        with self._lock:
            self._expected_models.add(model)

    def watch(self, process: WorkerHandle) -> None:
        """Declare the worker dead as soon as this process exits, without waiting heartbeats."""
        with self._lock:
            self._processes[process.worker_id] = process

    # --- what the API server calls -------------------------------------------------------

    def submit(
        self,
        model: str,
        prompt: str | Sequence[int],
        params: SamplingParams,
        on_delta: Callable[[Delta], None],
        *,
        priority: int = 0,
        slo: Slo | None = None,
        arrival_ms: float | None = None,
    ) -> FleetRequest:
        """arrival_ms: its arrival on the fleet's virtual clock (a virtual-time run, see
        _virtual_time.py); then every time the request records is virtual."""
        name, _, variant = model.partition(":")
        with self._lock:
            if name not in self.models() and name not in self._expected_models:
                known = ", ".join(sorted(self.models())) or "none"
                raise NoWorkerError(f"model {model!r} is not served here; models: {known}")
            request = FleetRequest(
                request_id=f"r{next(self._ids)}",
                model=name,
                variant=variant or None,
                prompt=prompt if isinstance(prompt, str) else list(prompt),
                params=params,
                priority=priority,
                slo=slo,
                on_delta=on_delta,
                keys=prefix_keys(prompt),
            )
            if arrival_ms is not None:
                request.arrival_ms = arrival_ms
                request.submitted_at = arrival_ms / 1000.0
            self._place(request)
        return request

    def abort(self, request: FleetRequest) -> None:
        with self._lock:
            if request in self._parked:
                self._parked.remove(request)
            worker = self._workers.get(request.worker_id or "")
            self._requests.pop(request.attempt_id, None)
            if worker is not None:
                worker.inflight.pop(request.attempt_id, None)
                worker.client.cast(ABORT, {"rid": request.attempt_id})
            request.finished = True

    def models(self) -> dict[str, dict[str, Any]]:
        """Served models: name -> {variants, max_model_len, vocab_size, has_tokenizer}."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for worker in self._workers.values():
                for model, info in worker.catalog.items():
                    entry = out.setdefault(model, {"variants": set(), **info})
                    entry["variants"].add(worker.variant)
            for entry in out.values():
                entry["variants"] = sorted(entry["variants"])
            return out

    def workers(self) -> list[WorkerState]:
        with self._lock:
            return list(self._workers.values())

    def queue_depth(self, model: str | None = None) -> int:
        """Requests waiting: parked here plus waiting inside workers, as they last reported
        or as the router's own count of requests beyond their seats says, whichever is more
        (the router's count is fresher than a heartbeat)."""
        with self._lock:
            parked = sum(1 for r in self._parked if model in (None, r.model))
            waiting = sum(
                max(w.stats.num_waiting, len(w.inflight) - w.max_num_seqs)
                for w in self._workers.values()
                if model is None or w.serves(model)
            )
            return parked + waiting

    def remove_worker(self, worker_id: str, reason: str) -> None:
        """Take a worker out of the fleet; its in-flight requests move to other workers."""
        with self._lock:
            worker = self._workers.pop(worker_id, None)
            self._processes.pop(worker_id, None)
            if worker is None:
                return
            moved = list(worker.inflight.values())
            worker.inflight.clear()
            for request in moved:
                self._requests.pop(request.attempt_id, None)
        log.warning("worker %s removed (%s); %d requests move", worker_id, reason, len(moved))
        with self._lock:
            for request in moved:
                if len(request.workers_tried) >= MAX_ATTEMPTS:  # it may be what kills them
                    request.fail(
                        f"request lost {len(request.workers_tried)} workers "
                        f"({', '.join(request.workers_tried)}); the last: {reason}"
                    )
                    continue
                self.num_failovers += 1
                if self.metrics is not None:
                    self.metrics.observe_failover(request.model)
                request.resume_from_streamed()
                self._place(request)
        if self.metrics is not None:
            self.metrics.observe_worker_gone(worker, reason)
        for callback in self.on_worker_gone:
            callback(worker, reason)
        worker.client.close()  # last: closing a client of a dead peer can take a while

    # --- placing -------------------------------------------------------------------------

    def _place(self, request: FleetRequest) -> None:
        """Send the request to the best worker, or park it (lock held)."""
        candidates = self._candidates(request)
        if not candidates:
            request.parked_since = request.parked_since or time.monotonic()
            self._parked.append(request)
            return
        request.parked_since = None
        prompt_len = prompt_tokens(request.current_prompt)
        states = {c.worker_id: c for c in candidates}
        chosen = self.policy.choose(
            list(states.values()), prompt_len, request.current_params.max_tokens
        )
        worker = self._workers[chosen]
        request.new_attempt(chosen)
        worker.inflight[request.attempt_id] = request
        worker.prefix.add(request.keys, checkable=not isinstance(request.prompt, str))
        worker.note_loading(request.model)
        self._requests[request.attempt_id] = request
        worker.client.cast(
            SUBMIT,
            {
                "rid": request.attempt_id,
                "model": request.model,
                "prompt": request.current_prompt,
                "params": params_to_wire(request.current_params),
                "priority": request.priority,
                "arrival_ms": request.arrival_ms,
            },
        )

    def _candidates(self, request: FleetRequest) -> list[Candidate]:
        pool = [w for w in self._workers.values() if w.serves(request.model) and w.state == "ready"]
        if request.variant is not None:
            pool = [w for w in pool if w.variant == request.variant]
        elif request.slo is not None:
            pool = self._variant_for_slo(pool, request)
        # Models load on demand: a worker that must load the model (and perhaps evict another)
        # is picked only when none has it loaded.
        pool = [w for w in pool if w.has_loaded(request.model)] or pool
        return [w.candidate(request.keys, TOKEN_CHUNK) for w in pool]

    def _variant_for_slo(self, pool: list[WorkerState], request: FleetRequest) -> list[WorkerState]:
        """The cheapest variant whose best worker is predicted to meet the SLO; else the one
        predicted fastest (a faster variant under load)."""
        by_variant: dict[str, list[WorkerState]] = {}
        for worker in pool:
            by_variant.setdefault(worker.variant, []).append(worker)
        if len(by_variant) <= 1:
            return pool
        prompt_len = prompt_tokens(request.current_prompt)
        best: list[tuple[float, float, str]] = []
        for variant, workers in by_variant.items():
            ttft = min(w.predicted_ttft_ms(prompt_len, request.keys) for w in workers)
            tpot = min(w.tpot_ms for w in workers)
            meets = request.slo.met_by(ttft, tpot)
            cost = min(w.cost for w in workers)
            best.append((0 if meets else 1, cost if meets else ttft, variant))
        return by_variant[min(best)[2]]

    # --- the inbox (the server thread) ---------------------------------------------------

    def _on_hello(self, msg: Message, client_id: bytes) -> dict[str, Any]:
        header = msg.header
        worker_id = str(header.get("worker_id", ""))
        if not worker_id or not header.get("endpoint"):
            raise HandlerError(
                "bad_hello", f"hello needs worker_id and endpoint, got {dict(header)!r}"
            )
        worker = WorkerState.from_hello(
            header,
            Client(
                header["endpoint"],
                heartbeat_interval=self.heartbeat_s,
                **client_options(self._keys),
            ),
        )
        with self._lock:
            old = self._workers.get(worker_id)
            self._workers[worker_id] = worker
            parked, self._parked = self._parked, []
            for request in parked:
                self._place(request)
            if worker.step_clock == "virtual":
                self.clock.tell(worker)
        if old is not None:
            old.client.close()
        log.info(
            "worker %s ready: %s on %s (pid %s)",
            worker_id,
            worker.model,
            worker.device.name,
            worker.pid,
        )
        return {"ok": True}

    def _on_outputs(self, msg: Message, client_id: bytes) -> None:
        worker_id = str(msg.header.get("worker_id", ""))
        now = time.monotonic()
        # A virtual-time worker stamps its outputs with its chip's clock: requests record that.
        clock_ms = msg.header.get("clock_ms")
        stamp = now if clock_ms is None else float(clock_ms) / 1000.0
        finished: list[tuple[FleetRequest, WorkerState]] = []
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is None:
                return  # outputs of a worker already removed: its requests moved on
            worker.last_heard = now
            deliveries = []
            for item in msg.header.get("outputs") or []:
                request = self._requests.get(str(item.get("rid")))
                if request is None or request.worker_id != worker_id:
                    continue
                delta = request.take_output(item, worker_id, stamp)
                if delta.finished:
                    self._requests.pop(request.attempt_id, None)
                    worker.inflight.pop(request.attempt_id, None)
                    if request.tpot_ms is not None:
                        worker.observe_tpot(request.tpot_ms)
                    worker.observe_device_times(request)
                    request.chip = worker.device.model or worker.device.name
                    finished.append((request, worker))
                deliveries.append((request, delta))
        if self.metrics is not None:  # before delivery: a client holding its reply sees it counted
            for request, worker in finished:
                self.metrics.observe_request(request, worker)
        for request, delta in deliveries:
            request.deliver(delta)
        for request, _ in finished:
            for callback in self.on_request_done:
                callback(request)

    def _on_stats(self, msg: Message, client_id: bytes) -> None:
        with self._lock:
            worker = self._workers.get(str(msg.header.get("worker_id", "")))
            if worker is None:
                return
            worker.update_stats(msg.header, time.monotonic())
        if self.metrics is not None:
            self.metrics.observe_worker(worker)

    def _on_clock(self, msg: Message, client_id: bytes) -> None:
        """A virtual-time worker reached its horizon; its stats are those of that moment."""
        worker_id = str(msg.header.get("worker_id", ""))
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is None:
                return
            worker.update_stats(msg.header, time.monotonic())
        self.clock.note(worker_id, float(msg.header.get("clock_ms", 0.0)))

    # --- the monitor thread --------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.heartbeat_s / 2):
            now = time.monotonic()
            gone: list[tuple[str, str]] = []
            with self._lock:
                for worker_id, worker in self._workers.items():
                    process = self._processes.get(worker_id)
                    if process is not None and not process.alive():
                        gone.append((worker_id, f"process {process.pid} exited"))
                    elif now - worker.last_heard > MISSED_HEARTBEATS * self.heartbeat_s:
                        gone.append((worker_id, f"silent for {now - worker.last_heard:.1f}s"))
                    elif worker.step_age_s > self.hang_timeout_s:
                        gone.append((worker_id, f"no engine step for {worker.step_age_s:.0f}s"))
                expired = [
                    r for r in self._parked if now - (r.parked_since or now) > self.park_timeout_s
                ]
                for request in expired:
                    self._parked.remove(request)
                if self._parked:  # a worker may have come back to ready
                    parked, self._parked = self._parked, []
                    for request in parked:
                        self._place(request)
            for worker_id, reason in gone:
                self.remove_worker(worker_id, reason)
            for request in expired:
                request.fail(
                    f"no worker for model {request.model!r} within {self.park_timeout_s:.0f}s; "
                    "check the fleet's workers (GET /v1/fleet)"
                )
