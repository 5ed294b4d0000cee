"""A worker: one Engine on one device, served over kpt.wire, its engine loop on its own thread.

The router casts requests to the worker's Server; the server thread only queues them, so it
answers at once however long a step takes. The engine thread adds them, steps the engine and
casts every step's token deltas to the router's inbox. A heartbeat thread casts the latest
stats every HEARTBEAT_S: the router's liveness check, and its view of the worker's load.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any

from kpt.serve._engine import Engine
from kpt.serve.fleet._messages import (
    ABORT,
    HEARTBEAT_S,
    HELLO,
    OUTPUTS,
    PING,
    SHUTDOWN,
    STATS,
    SUBMIT,
    DeviceSummary,
    WorkerStats,
    params_from_wire,
)
from kpt.serve.fleet._scoring import StepTimeModel
from kpt.wire import Client, Message, Server

log = logging.getLogger("kpt.serve.fleet.worker")

_SPEED_SMOOTHING = 0.2  # weight of the newest step in the tokens/s moving average


class Worker:
    """Serves `engine` to the router at `router_endpoint` until shutdown or its parent dies."""

    def __init__(
        self,
        engine: Engine,
        *,
        worker_id: str,
        router_endpoint: str,
        model: str,
        variant: str = "default",
        endpoint: str = "tcp://127.0.0.1:0",
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.model = model
        self.variant = variant
        self.heartbeat_s = heartbeat_s
        self._server = Server(endpoint, heartbeat_interval=heartbeat_s)
        self._server.register(SUBMIT, self._on_submit)
        self._server.register(ABORT, self._on_abort)
        self._server.register(PING, lambda msg, client: self._stats.to_wire())
        self._server.register(SHUTDOWN, lambda msg, client: self.stop())
        self._router = Client(router_endpoint, heartbeat_interval=heartbeat_s, timeout=30.0)
        self._commands: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._stats = WorkerStats()
        self._steps = StepTimeModel()
        self._texts: dict[str, str] = {}  # rid -> text sent so far (for text deltas)
        self._last_step = time.monotonic()
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

    # --- the engine thread ---------------------------------------------------------------

    def _engine_loop(self) -> None:
        try:
            while not self._stopped.is_set():
                errors = self._apply_commands()
                if errors:
                    self._send_outputs(errors)
                if self.engine.has_unfinished:
                    self._step()
                else:
                    self._refresh_stats(0.0, idle=True)
                    self._wake.wait(self.heartbeat_s)
                    self._wake.clear()
        except Exception:  # a broken engine must not look alive: the router fails over
            log.exception("worker %s: the engine failed; stopping", self.worker_id)
            self.stop()

    def _apply_commands(self) -> list[dict[str, Any]]:
        errors = []
        while self._commands:
            kind, header = self._commands.popleft()
            rid = str(header.get("rid", ""))
            if kind == ABORT:
                self.engine.abort(rid)
                self._texts.pop(rid, None)
                continue
            try:
                self.engine.add_request(
                    header.get("prompt"),
                    params_from_wire(header.get("params") or {}),
                    request_id=rid,
                    priority=int(header.get("priority", 0)),
                )
                self._texts[rid] = ""
            except (ValueError, TypeError) as exc:  # the request's fault: tell its caller
                errors.append({"rid": rid, "finished": True, "reason": "error", "error": str(exc)})
            except Exception as exc:  # refuse it, but keep serving the others
                log.exception("worker %s: adding request %s failed", self.worker_id, rid)
                message = f"the worker could not add this request: {type(exc).__name__}: {exc}"
                errors.append({"rid": rid, "finished": True, "reason": "error", "error": message})
        return errors

    def _step(self) -> None:
        start = time.perf_counter()
        outputs = self.engine.step()
        elapsed = time.perf_counter() - start
        self._last_step = time.monotonic()
        wire = []
        for out in outputs:
            sent = self._texts.get(out.request_id, "")
            item = {
                "rid": out.request_id,
                "new": list(out.new_token_ids),
                "text": out.text[len(sent) :] if out.text.startswith(sent) else out.text,
                "finished": out.finished,
                "reason": out.finish_reason,
            }
            if len(out.token_ids) == len(out.new_token_ids):  # its first output
                item["prompt_ids"] = list(out.prompt_token_ids)
                item["cached"] = out.num_cached_tokens
            if out.finished:
                self._texts.pop(out.request_id, None)
                item["ttft_ms"] = out.ttft_ms
                item["latency_ms"] = out.latency_ms
            else:
                self._texts[out.request_id] = out.text
            wire.append(item)
        if wire:
            self._send_outputs(wire)
        self._refresh_stats(elapsed, idle=False)

    def _send_outputs(self, outputs: list[dict[str, Any]]) -> None:
        self._router.cast(OUTPUTS, {"worker_id": self.worker_id, "outputs": outputs})

    def _refresh_stats(self, elapsed: float, idle: bool) -> None:
        stats = self.engine.stats()
        previous = self._stats
        speed = previous.tokens_per_s
        if not idle and elapsed > 0:
            done = (stats.generated_tokens + stats.prompt_tokens_computed) - (
                previous.generated_tokens + previous.prompt_tokens_computed
            )
            self._steps.add(max(done, 0), 1000.0 * elapsed)
            rate = max(done, 0) / elapsed
            speed = rate if speed == 0 else (1 - _SPEED_SMOOTHING) * speed + _SPEED_SMOOTHING * rate
        overhead, per_token = self._steps.fit()
        self._stats = WorkerStats(
            num_running=stats.num_running,
            num_waiting=stats.num_waiting,
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
        )

    # --- the heartbeat thread ------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._stopped.wait(self.heartbeat_s):
            header = {
                "worker_id": self.worker_id,
                "stats": self._stats.to_wire(),
                "step_age_s": time.monotonic() - self._last_step
                if self.engine.has_unfinished
                else 0.0,
            }
            self._router.cast(STATS, header)

    def _hello(self) -> dict[str, Any]:
        info = self.engine.device_info
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
        config = self.engine.model_config
        return {
            "worker_id": self.worker_id,
            "endpoint": self._server.endpoint,
            "pid": os.getpid(),
            "model": self.model,
            "variant": self.variant,
            "dtype": str(self.engine.dtype).replace("torch.", ""),
            "device": device.to_wire(),
            "max_model_len": self.engine.max_model_len,
            "vocab_size": config.vocab_size,
            "has_tokenizer": self.engine.tokenizer is not None,
            "block_size": self.engine.config.block_size,
            "max_num_seqs": self.engine.config.max_num_seqs,
            "max_num_batched_tokens": self.engine.config.max_num_batched_tokens,
        }
