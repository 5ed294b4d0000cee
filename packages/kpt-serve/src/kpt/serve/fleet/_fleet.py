"""A fleet: router, metrics, one worker process per spec (through a launcher), optional
autoscaler."""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence

from kpt.serve.fleet._autoscaler import Autoscaler, FleetLoad, ScalingPolicy
from kpt.serve.fleet._launcher import (
    Launcher,
    LauncherFactory,
    LocalLauncher,
    WorkerHandle,
    WorkerSpec,
    WorkerStartError,
)
from kpt.serve.fleet._messages import HEARTBEAT_S
from kpt.serve.fleet._metrics import FleetMetrics
from kpt.serve.fleet._network import FleetNetwork, advertised
from kpt.serve.fleet._router import Router
from kpt.serve.fleet._workers import WorkerState

_TTFT_WINDOW = 64  # recent requests whose TTFT the autoscaler looks at


class Fleet:
    """`Fleet(specs).start()`; `.router`, `.metrics`; `close()` stops every process it started."""

    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        *,
        policy: str = "predicted",
        heartbeat_s: float = HEARTBEAT_S,
        autoscale: ScalingPolicy | None = None,
        autoscale_spec: WorkerSpec | None = None,
        autoscale_interval_s: float | None = 1.0,
        launcher: LauncherFactory = LocalLauncher,
        network: FleetNetwork | None = None,
    ) -> None:
        """autoscale_interval_s: how often the autoscaler looks; None runs no thread, and the
        caller scales by calling `fleet.autoscaler.tick()` itself (tests, simulations).
        launcher: makes the launcher from the router's inbox endpoint and heartbeat_s, once the
        router listens: LocalLauncher (child processes), or functools.partial(RayLauncher, ...).
        network: where the router and workers listen (FleetNetwork.on("0.0.0.0") for a fleet
        across hosts: a routable bind and the fleet's key pair); None: loopback."""
        if not specs and autoscale is None:
            raise ValueError("a fleet needs at least one worker spec (or an autoscaler)")
        self.specs = list(specs)
        self.metrics = FleetMetrics()
        self.network = network
        self.router = Router(
            policy=policy,
            heartbeat_s=heartbeat_s,
            metrics=self.metrics,
            **({"inbox": network.endpoint(), "keys": network.keys} if network else {}),
        )
        self.model_dirs = {name: path for spec in self.specs for name, path in spec.models.items()}
        self._heartbeat_s = heartbeat_s
        self._make_launcher = launcher
        self._launcher: Launcher | None = None
        self._lock = threading.Lock()
        self._processes: dict[str, WorkerHandle] = {}
        self._recent_ttft: deque[float] = deque(maxlen=_TTFT_WINDOW)
        self._scaling = autoscale
        self._scale_spec = autoscale_spec or (self.specs[0] if self.specs else None)
        if autoscale is not None and self._scale_spec is None:
            raise ValueError("an autoscaled fleet needs autoscale_spec: the worker it adds")
        if self._scale_spec is not None:
            self.model_dirs.setdefault(self._scale_spec.model, self._scale_spec.model_dir)
        self.autoscaler: Autoscaler | None = None
        self._autoscale_interval_s = autoscale_interval_s

    def start(self) -> Fleet:
        self.router.start()
        self.router.on_worker_gone.append(self._reap)
        self.router.on_request_done.append(self._note_ttft)
        if self.network is None:
            self._launcher = self._make_launcher(self.router.inbox_endpoint, self._heartbeat_s)
        else:
            inbox = advertised(self.router.inbox_endpoint, self.network.advertise_host)
            self._launcher = self._make_launcher(inbox, self._heartbeat_s, network=self.network)
        for model in self.model_dirs:
            self.router.expect(model)
        for spec in self.specs:
            self.add_worker(spec)
        if self._scaling is not None:
            self.autoscaler = Autoscaler(
                self._scaling, self._load, self._scale, self._autoscale_interval_s or 1.0
            )
            if self._autoscale_interval_s is not None:
                self.autoscaler.start()
        return self

    def add_worker(self, spec: WorkerSpec) -> WorkerHandle:
        process = self._launcher.start(spec)
        with self._lock:
            self._processes[process.worker_id] = process
        for model in spec.models:
            self.router.expect(model)
        self.router.watch(process)
        return process

    def remove_worker(self, worker_id: str) -> None:
        """Stop one worker; its in-flight requests move to the others."""
        self.router.remove_worker(worker_id, "scaled down")
        with self._lock:
            process = self._processes.pop(worker_id, None)
        if process is not None:
            self._launcher.stop(process)

    def processes(self) -> list[WorkerHandle]:
        with self._lock:
            return list(self._processes.values())

    def wait_ready(self, timeout: float = 120.0, count: int | None = None) -> None:
        """Block until `count` workers (default: every process started) have registered."""
        deadline = time.monotonic() + timeout
        while True:
            ready = {w.worker_id for w in self.router.workers()}
            processes = self.processes()
            for process in processes:
                if process.worker_id not in ready and not process.alive():
                    code = process.returncode
                    how = f"exited with code {code}"
                    if code is None:  # no code to tell: a Ray actor or its node died
                        how = "was lost (its host or Ray actor died)"
                    raise WorkerStartError(
                        f"worker {process.worker_id} ({process.spec.model} on "
                        f"{process.spec.device}) {how} before it registered; its stderr above "
                        "says why"
                    )
            if len(ready) >= (len(processes) if count is None else count):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(ready)} of {len(processes)} workers registered within {timeout:.0f}s"
                )
            time.sleep(0.05)

    def close(self) -> None:
        if self.autoscaler is not None:
            self.autoscaler.close()
        self.router.close()
        if self._launcher is not None:
            self._launcher.close()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- autoscaling -----------------------------------------------------------------------

    def _load(self) -> FleetLoad:
        model = self._scale_spec.model
        workers = [p for p in self.processes() if p.spec.model == model]
        inflight = sum(len(w.inflight) for w in self.router.workers() if w.model == model)
        ttfts = list(self._recent_ttft)
        p90 = statistics.quantiles(ttfts, n=10)[-1] * 1000 if len(ttfts) >= 10 else None
        queued = self.router.queue_depth(model)
        registered = {w.worker_id for w in self.router.workers()}
        starting = sum(1 for p in workers if p.worker_id not in registered)
        return FleetLoad(len(workers), queued, inflight + queued, p90, starting)

    def _note_ttft(self, request) -> None:
        if request.ttft_s is not None:
            self._recent_ttft.append(request.ttft_s)

    def _scale(self, change: int) -> None:
        if change > 0:
            self.add_worker(dataclasses.replace(self._scale_spec))
            return
        ready = [w for w in self.router.workers() if w.model == self._scale_spec.model]
        if ready:  # the least loaded goes
            victim = min(ready, key=lambda w: (len(w.inflight), w.started_at))
            self.remove_worker(victim.worker_id)

    def _reap(self, worker: WorkerState, reason: str) -> None:
        """The router dropped a worker (dead, silent, hung): make sure its process is gone."""
        with self._lock:
            process = self._processes.pop(worker.worker_id, None)
        if process is not None:
            self._launcher.stop(process, timeout=2.0)
