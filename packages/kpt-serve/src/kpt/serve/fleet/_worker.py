"""A worker: the engines of one device, served over kpt.wire, its engine loop on its own thread.

The router casts requests to the worker's Server; the server thread only queues them, so it
answers at once however long a step takes. The engine thread adds them, steps the engines and
casts every step's token deltas to the router's inbox. A heartbeat thread casts the latest
stats every HEARTBEAT_S: the router's liveness check, and its view of the worker's load.

A worker serves one model, or several under a memory budget (ModelSet): a request for a model
not loaded loads it on the engine thread, evicting idle models least recently used first; a
request that cannot fit until a busy model drains waits in the worker.

Step times feed the router's predictions. `step_clock="wall"` measures them on this host;
"device" reads the engine's clock instead, which on a simulated chip is simulated time, so a
fleet of kpt_sim workers is routed by the simulated chips' speeds. "virtual" does that and puts
the worker on the fleet's virtual timeline (_virtual_time.py): it steps only up to the horizon
the router gives it, and stamps its outputs with its chip's clock.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import replace
from typing import Any

from kpt.serve._clock import DeviceClock
from kpt.serve._engine import Engine, EngineStats
from kpt.serve.fleet._messages import (
    ABORT,
    CLOCK,
    HEARTBEAT_S,
    HELLO,
    HORIZON,
    OUTPUTS,
    PING,
    SHUTDOWN,
    STATS,
    SUBMIT,
    DeviceSummary,
    WorkerStats,
    params_from_wire,
)
from kpt.serve.fleet._model_set import ModelBusy, ModelSet, catalog_entry
from kpt.serve.fleet._network import FleetKeys, advertised, client_options, server_options
from kpt.serve.fleet._scoring import TOKEN_CHUNK, StepTimeModel
from kpt.serve.fleet._virtual_time import Horizon
from kpt.wire import Client, Message, Server

log = logging.getLogger("kpt.serve.fleet.worker")

# Cached prefixes a heartbeat reports (about 40 KB of msgpack at most): the most recent.
MAX_REPORTED_PREFIXES = 4096
_SPEED_SMOOTHING = 0.2  # weight of the newest step in the tokens/s moving average
STEP_CLOCKS = ("wall", "device", "virtual")


class Worker:
    """Serves `models` (its first is loaded at start) to the router at `router_endpoint` until
    shutdown or its parent dies."""

    def __init__(
        self,
        models: ModelSet,
        *,
        worker_id: str,
        router_endpoint: str,
        variant: str = "default",
        endpoint: str = "tcp://127.0.0.1:0",
        heartbeat_s: float = HEARTBEAT_S,
        step_clock: str = "wall",
        keys: FleetKeys | None = None,
        advertise_host: str | None = None,
    ) -> None:
        """keys: the fleet's CURVE pair (FleetKeys.from_env() in a launched worker), needed
        to bind `endpoint` beyond loopback; advertise_host: the name the router reaches a
        wildcard bind (0.0.0.0) by, default this host's."""
        if step_clock not in STEP_CLOCKS:
            raise ValueError(f"step_clock {step_clock!r}: use one of {', '.join(STEP_CLOCKS)}")
        self.models = models
        self.model = next(iter(models.catalog))  # the primary model, loaded at start
        # Its first engine describes the device and limits; no reference is kept, so that
        # evicting that model frees its memory.
        first = models.ensure(self.model)
        self._identity = _identity(first)
        self._horizon = _horizon(first) if step_clock == "virtual" else None
        del first
        self.worker_id = worker_id
        self.variant = variant
        self.heartbeat_s = heartbeat_s
        self.step_clock = step_clock
        self._server = Server(endpoint, heartbeat_interval=heartbeat_s, **server_options(keys))
        self._advertise_host = advertise_host
        self._server.register(SUBMIT, self._on_submit)
        self._server.register(ABORT, self._on_abort)
        self._server.register(HORIZON, self._on_horizon)
        self._server.register(PING, lambda msg, client: self._stats.to_wire())
        self._server.register(SHUTDOWN, lambda msg, client: self.stop())
        self._router = Client(
            router_endpoint, heartbeat_interval=heartbeat_s, timeout=30.0, **client_options(keys)
        )
        self._commands: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._blocked: collections.deque[dict[str, Any]] = collections.deque()  # ModelBusy
        self._owner: dict[str, str] = {}  # rid -> model
        # model -> (id of its engine, that engine's clock after its last step, ms)
        self._clock_ms: dict[str, tuple[int, float]] = {}
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._stats = WorkerStats()
        self._steps = StepTimeModel()
        self._started: set[str] = set()  # requests that have sent their first output
        self._last_step = time.monotonic()
        self._has_work = False
        self._threads: list[threading.Thread] = []

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Worker:
        self._server.start()
        self._router.call(HELLO, self._hello(), timeout=30.0)
        for target, name in ((self._engine_loop, "engine"), (self._heartbeat_loop, "heartbeat")):
            thread = threading.Thread(target=target, name=f"kpt-serve-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def wait(self) -> None:
        self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def close(self) -> None:
        self.stop()
        for thread in self._threads:
            thread.join(10)
        self._router.close()
        self._server.close()

    # --- the server thread: queue and return --------------------------------------------------

    def _on_submit(self, msg: Message, client: bytes) -> None:
        self._commands.append((SUBMIT, dict(msg.header)))
        self._wake.set()

    def _on_abort(self, msg: Message, client: bytes) -> None:
        self._commands.append((ABORT, dict(msg.header)))
        self._wake.set()

    def _on_horizon(self, msg: Message, client: bytes) -> None:
        self._commands.append((HORIZON, dict(msg.header)))
        self._wake.set()

    # --- the engine thread ---------------------------------------------------------------

    def _engine_loop(self) -> None:
        try:
            while not self._stopped.is_set():
                errors = self._apply_commands()
                if errors:
                    self._send_outputs(errors)
                busy = [(n, e) for n, e in self.models.engines() if e.has_unfinished]
                # In virtual time, work waits while the chip's clock is at the horizon.
                runnable = busy if self._horizon is None or self._horizon.open() else []
                # The heartbeat thread reads this flag, never the engines (owned by this thread).
                self._has_work = bool(runnable or self._blocked)
                for name, engine in runnable:
                    self._step(name, engine)
                if not runnable:
                    if not busy:
                        self._refresh_stats(None, idle=True)
                    if self._horizon is not None:
                        self._at_horizon(idle=not busy)
                    self._wake.wait(self.heartbeat_s)
                    self._wake.clear()
        except Exception:  # a broken engine must not look alive: the router fails over
            log.exception("worker %s: the engine failed; stopping", self.worker_id)
            self.stop()

    def _apply_commands(self) -> list[dict[str, Any]]:
        """Add what arrived, in order. While a request waits for room, the model that will
        make room for it (the least recently used other one) takes no new requests, so it
        drains and is evicted: the waiting model is never starved by traffic that keeps the
        others busy. Requests for the other loaded models go on being served."""
        errors = []
        retry, self._blocked = self._blocked, collections.deque()
        for header in retry:  # requests waiting for room, oldest first
            errors.extend(self._admit(header))
        while self._commands:
            kind, header = self._commands.popleft()
            if kind == ABORT:
                self._abort(str(header.get("rid", "")))
                continue
            if kind == HORIZON:
                if self._horizon is not None:
                    self._horizon.extend(header.get("until_ms"))
                continue
            errors.extend(self._admit(header))
        return errors

    def _admit(self, header: dict[str, Any]) -> list[dict[str, Any]]:
        if self._blocked:
            waiting = str(self._blocked[0].get("model") or self.model)
            model = str(header.get("model") or self.model)
            victim = self.models.next_to_evict(excluding=waiting)
            if model in (waiting, victim) or self.models.get(model) is None:
                self._blocked.append(header)  # behind the waiting request, in order
                return []
        return self._add(header)

    def _abort(self, rid: str) -> None:
        self._blocked = collections.deque(h for h in self._blocked if h.get("rid") != rid)
        engine = self.models.get(self._owner.pop(rid, self.model))
        if engine is not None:
            engine.abort(rid)
        self._started.discard(rid)

    def _add(self, header: dict[str, Any]) -> list[dict[str, Any]]:
        rid = str(header.get("rid", ""))
        model = str(header.get("model") or self.model)
        try:
            engine = self.models.ensure(model)
        except ModelBusy:
            self._blocked.append(header)
            return []
        except KeyError as exc:
            return [{"rid": rid, "finished": True, "reason": "error", "error": exc.args[0]}]
        except Exception as exc:  # a model that fails to load refuses its request only
            log.exception("worker %s: loading %s failed", self.worker_id, model)
            message = f"the worker could not load model {model!r}: {type(exc).__name__}: {exc}"
            return [{"rid": rid, "finished": True, "reason": "error", "error": message}]
        arrival_ms = header.get("arrival_ms")
        if arrival_ms is not None and self._horizon is not None:
            arrival_ms = self._horizon.engine_arrival_ms(engine.clock, float(arrival_ms))
        else:
            arrival_ms = None  # now, on the engine's clock
        try:
            engine.add_request(
                header.get("prompt"),
                # Outputs as deltas: the engine copies no growing token list or text per step.
                replace(params_from_wire(header.get("params") or {}), output_kind="delta"),
                request_id=rid,
                priority=int(header.get("priority", 0)),
                arrival_ms=arrival_ms,
            )
        except (ValueError, TypeError) as exc:  # the request's fault: tell its caller
            return [{"rid": rid, "finished": True, "reason": "error", "error": str(exc)}]
        except Exception as exc:  # refuse it, but keep serving the others
            log.exception("worker %s: adding request %s failed", self.worker_id, rid)
            message = f"the worker could not add this request: {type(exc).__name__}: {exc}"
            return [{"rid": rid, "finished": True, "reason": "error", "error": message}]
        self._owner[rid] = model
        return []

    def _step(self, name: str, engine: Engine) -> None:
        start = time.perf_counter()
        outputs = engine.step()
        elapsed = time.perf_counter() - start
        self._last_step = time.monotonic()
        self.models.touch(name)
        wire = []
        for out in outputs:
            rid = out.request_id
            item = {
                "rid": rid,
                "new": out.new_token_ids,
                "text": out.text,  # the new part (OutputKind.DELTA)
                "finished": out.finished,
                "reason": out.finish_reason,
            }
            if rid not in self._started:  # its first output
                self._started.add(rid)
                item["prompt_ids"] = out.prompt_token_ids
                item["cached"] = out.num_cached_tokens
            if out.finished:
                self._started.discard(rid)
                self._owner.pop(rid, None)
                item["ttft_ms"] = out.ttft_ms
                item["latency_ms"] = out.latency_ms
            wire.append(item)
        if wire:
            self._send_outputs(wire)
        self._refresh_stats(self._step_ms(name, engine, elapsed), idle=False)

    def _step_ms(self, name: str, engine: Engine, elapsed: float) -> float | None:
        """The step's time for the router's fit; None: no sample (a freshly loaded engine).

        On a simulated chip with step_clock="device", the simulated time the step took (its
        clock does not run while the engine idles); otherwise wall time on this host."""
        if self.step_clock == "wall" or not engine.device_info.capabilities.simulated:
            return 1000.0 * elapsed
        now_ms = engine.stats().clock_ms
        last = self._clock_ms.get(name)
        self._clock_ms[name] = (id(engine), now_ms)
        if last is None or last[0] != id(engine) or now_ms < last[1]:
            return None  # its first step: the clock's start lies before the model's load
        return now_ms - last[1]

    def _send_outputs(self, outputs: list[dict[str, Any]]) -> None:
        header: dict[str, Any] = {"worker_id": self.worker_id, "outputs": outputs}
        if self._horizon is not None:
            header["clock_ms"] = self._horizon.clock.now_ms()
        self._router.cast(OUTPUTS, header)

    def _at_horizon(self, idle: bool) -> None:
        """Virtual time: an idle chip's clock moves to the horizon; once there, say so."""
        if idle:
            self._horizon.idle()
        clock_ms = self._horizon.reached()
        if clock_ms is not None:
            header = {"worker_id": self.worker_id, "clock_ms": clock_ms}
            self._router.cast(CLOCK, {**header, "stats": self._stats.to_wire()})

    def _refresh_stats(self, step_ms: float | None, idle: bool) -> None:
        stats = _total([engine.stats() for _, engine in self.models.engines()])
        previous = self._stats
        speed = previous.tokens_per_s
        done = (stats.generated_tokens + stats.prompt_tokens_computed) - (
            previous.generated_tokens + previous.prompt_tokens_computed
        )
        # An eviction drops the evicted engine's counts: a negative difference is no step.
        if not idle and step_ms is not None and step_ms > 0 and done >= 0:
            self._steps.add(done, step_ms)
            rate = 1000.0 * done / step_ms if step_ms > 0 else 0.0
            speed = rate if speed == 0 else (1 - _SPEED_SMOOTHING) * speed + _SPEED_SMOOTHING * rate
        overhead, per_token = self._steps.fit()
        self._stats = WorkerStats(
            num_running=stats.num_running,
            num_waiting=stats.num_waiting + len(self._blocked),
            kv_blocks_total=stats.kv_blocks_total,
            kv_blocks_used=stats.kv_blocks_used,
            kv_usage=stats.kv_usage,
            prefix_hit_rate=stats.prefix_hit_rate,
            num_preemptions=stats.num_preemptions,
            generated_tokens=stats.generated_tokens,
            prompt_tokens_computed=stats.prompt_tokens_computed,
            clock_ms=stats.clock_ms,
            tokens_per_s=speed,
            step_overhead_ms=overhead,
            step_ms_per_token=per_token,
            steps_measured=self._steps.steps,
            loaded_models=self.models.loaded(),
            model_loads=self.models.loads,
            model_evictions=self.models.evictions,
            memory_used=self.models.used_bytes(),
        )

    # --- the heartbeat thread ------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._stopped.wait(self.heartbeat_s):
            header = {
                "worker_id": self.worker_id,
                "stats": self._stats.to_wire(),
                "step_age_s": time.monotonic() - self._last_step if self._has_work else 0.0,
                "prefixes": self._cached_prefixes(),
            }
            self._router.cast(STATS, header)

    def _cached_prefixes(self) -> list[int]:
        """Chain hashes of the blocks its engines' prefix caches hold, when they are named as
        the router names token prompts' chunks (16-token blocks); else none."""
        held: list[int] = []
        for _, engine in self.models.engines():
            if engine.config.block_size == TOKEN_CHUNK:
                held += engine.pool.cached_prefixes(MAX_REPORTED_PREFIXES - len(held))
        return held

    def _hello(self) -> dict[str, Any]:
        return {
            **self._identity,
            "worker_id": self.worker_id,
            "endpoint": advertised(self._server.endpoint, self._advertise_host),
            "pid": os.getpid(),
            "model": self.model,
            "variant": self.variant,
            "catalog": {name: catalog_entry(path) for name, path in self.models.catalog.items()},
            "memory_budget": self.models.budget_bytes,
            "step_clock": self.step_clock,
        }


def _horizon(engine: Engine) -> Horizon:
    """The virtual-time side of a worker whose engine runs on a simulated chip."""
    if not engine.device_info.capabilities.simulated:
        raise ValueError(
            f"step_clock='virtual' needs a simulated device (kpt_sim); {engine.device} is a real "
            "one, whose clock is the wall: use step_clock 'wall' or 'device'"
        )
    return Horizon(DeviceClock(engine.device, simulated=True))


def _identity(engine: Engine) -> dict[str, Any]:
    """The hello fields that come from the worker's device and its first engine."""
    info = engine.device_info
    caps = info.capabilities
    device = DeviceSummary(
        name=str(info.torch_device),
        kind=info.kind,
        vendor=caps.vendor,
        model=caps.model,
        memory_total=caps.memory_total,
        peak_flops=float(caps.top_flops),
        features=sorted(caps.features),
    )
    return {
        "dtype": str(engine.dtype).replace("torch.", ""),
        "weights": engine.weight_format,
        "device": device.to_wire(),
        "max_model_len": engine.max_model_len,
        "vocab_size": engine.model_config.vocab_size,
        "has_tokenizer": engine.tokenizer is not None,
        "block_size": engine.config.block_size,
        "max_num_seqs": engine.config.max_num_seqs,
        "max_num_batched_tokens": engine.config.max_num_batched_tokens,
    }


def _total(stats: list[EngineStats]) -> EngineStats:
    """The worker's load over its loaded engines (one, usually)."""
    if len(stats) == 1:
        return stats[0]
    total = sum(s.kv_blocks_total for s in stats)
    used = sum(s.kv_blocks_used for s in stats)
    return EngineStats(
        num_running=sum(s.num_running for s in stats),
        num_waiting=sum(s.num_waiting for s in stats),
        kv_blocks_total=total,
        kv_blocks_used=used,
        kv_usage=used / total if total else 0.0,
        prefix_hit_rate=max((s.prefix_hit_rate for s in stats), default=0.0),
        num_preemptions=sum(s.num_preemptions for s in stats),
        num_steps=sum(s.num_steps for s in stats),
        prompt_tokens_computed=sum(s.prompt_tokens_computed for s in stats),
        generated_tokens=sum(s.generated_tokens for s in stats),
        clock_ms=max((s.clock_ms for s in stats), default=0.0),
    )
