"""Launching workers: a small interface (start / stop / alive) and its local-process version.

A worker process runs `python -m kpt.serve._cli worker ...`, loads its engine, binds its own
kpt.wire Server and says hello to the router's inbox; from then on the router talks to it.
A worker exits by itself when the process that launched it is gone, so none outlives its fleet.
Every launcher runs that same command (`worker_arguments`, `worker_env`): the local one as a
child of this process, the Ray one (`_ray_launcher.py`) as a child of a Ray actor.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kpt.serve.fleet._network import FleetNetwork


@dataclass(frozen=True)
class WorkerSpec:
    """One worker to start: which model folder (served under `model`), on which device."""

    model: str  # the name clients ask for
    model_dir: str
    device: str = "cpu"
    variant: str = "default"  # e.g. "fp32", "bf16": one model served in several forms
    dtype: str | None = None  # torch dtype name for the engine; None: the checkpoint's
    quantization: str | None = None  # "int8" or "fp8" weights (EngineConfig.quantization)
    num_kv_blocks: int | None = None
    max_num_seqs: int | None = None
    threads: int | None = None  # torch CPU threads; None: torch's default
    env: dict[str, str] = field(default_factory=dict)
    # More models the worker may serve (name -> folder), loaded on demand under
    # memory_budget_mb (weights + KV pools; least recently used idle model evicted first).
    extra_models: dict[str, str] = field(default_factory=dict)
    memory_budget_mb: float | None = None
    profile: str | None = None  # kpt_sim chip profile (KPT_SIM_PROFILE), e.g. "mi300x"
    step_clock: str = "wall"  # "device": on a simulated chip, route by its simulated time
    load_format: str | None = None  # "dummy": random weights of the config's shapes

    def __post_init__(self) -> None:
        if self.profile is not None and not self.device.startswith("kpt_sim"):
            raise ValueError(
                f"profile {self.profile!r} is a kpt_sim chip profile, but the worker's device is "
                f"{self.device!r}; use device kpt_sim:0 or drop the profile"
            )
        if self.memory_budget_mb is not None and self.memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be > 0, got {self.memory_budget_mb}")

    @property
    def models(self) -> dict[str, str]:
        """Every model it may serve, its own first."""
        return {self.model: self.model_dir, **self.extra_models}


class WorkerStartError(RuntimeError):
    """A worker could not be started: no place for it, or it exited before it registered."""


class WorkerHandle(Protocol):
    """A started worker as its launcher hands it out; the router and the fleet watch it."""

    worker_id: str
    spec: WorkerSpec

    @property
    def pid(self) -> int: ...  # the worker process's pid, on the host that runs it

    @property
    def returncode(self) -> int | None: ...  # None while it runs, or when no code is known

    def alive(self) -> bool: ...


@dataclass
class WorkerProcess:
    worker_id: str
    spec: WorkerSpec
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def alive(self) -> bool:
        return self.process.poll() is None


class Launcher(Protocol):
    """Starts and stops worker processes; the router and the autoscaler call it."""

    def start(self, spec: WorkerSpec) -> WorkerHandle: ...

    def stop(self, worker: WorkerHandle, timeout: float = 5.0) -> None: ...

    def close(self) -> None: ...


# What a Fleet is given: (router inbox endpoint, heartbeat_s) -> a Launcher. The class
# LocalLauncher is one; functools.partial(RayLauncher, address=...) another.
LauncherFactory = Callable[[str, float], Launcher]


def worker_arguments(
    spec: WorkerSpec,
    worker_id: str,
    router_endpoint: str,
    heartbeat_s: float | None = None,
    network: FleetNetwork | None = None,
) -> list[str]:
    """The worker's command line after the interpreter: `-m kpt.serve._cli worker ...`."""
    arguments = [
        "-m", "kpt.serve._cli", "worker", spec.model_dir,
        "--device", spec.device, "--router", router_endpoint,
        "--worker-id", worker_id, "--model-name", spec.model, "--variant", spec.variant,
    ]  # fmt: skip
    for flag, value in (
        ("--dtype", spec.dtype),
        ("--quantization", spec.quantization),
        ("--num-kv-blocks", spec.num_kv_blocks),
        ("--max-num-seqs", spec.max_num_seqs),
        ("--threads", spec.threads),
        ("--heartbeat-s", heartbeat_s),
        ("--memory-budget-mb", spec.memory_budget_mb),
        ("--step-clock", spec.step_clock),
        ("--load-format", spec.load_format),
    ):
        if value is not None:
            arguments += [flag, str(value)]
    for name, folder in spec.extra_models.items():
        arguments += ["--also-model", f"{name}={folder}"]
    if network is not None:
        arguments += network.worker_arguments()
    return arguments


def worker_env(spec: WorkerSpec, network: FleetNetwork | None = None) -> dict[str, str]:
    """What the worker's environment adds to its launcher's: the spec's env and chip profile,
    and the fleet's key pair when it has one (never on the command line)."""
    env = dict(spec.env)
    if spec.profile is not None:
        env["KPT_SIM_PROFILE"] = spec.profile
    if network is not None:
        env.update(network.worker_env())
    return env


class LocalLauncher:
    """Worker processes on this host, children of this process."""

    def __init__(
        self,
        router_endpoint: str,
        heartbeat_s: float | None = None,
        *,
        network: FleetNetwork | None = None,
    ) -> None:
        self.router_endpoint = router_endpoint
        self.heartbeat_s = heartbeat_s
        self.network = network
        self._ids = itertools.count()
        self._workers: dict[str, WorkerProcess] = {}
        self._lock = threading.Lock()

    def start(self, spec: WorkerSpec) -> WorkerProcess:
        with self._lock:
            worker_id = f"w{next(self._ids)}-{spec.device.replace(':', '')}"
        arguments = worker_arguments(
            spec, worker_id, self.router_endpoint, self.heartbeat_s, self.network
        )
        process = subprocess.Popen(
            [sys.executable, *arguments],
            env={**os.environ, **worker_env(spec, self.network)},
            stdin=subprocess.DEVNULL,
        )
        worker = WorkerProcess(worker_id, spec, process)
        with self._lock:
            self._workers[worker_id] = worker
        return worker

    def stop(self, worker: WorkerProcess, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; reaps the process."""
        with self._lock:
            self._workers.pop(worker.worker_id, None)
        if worker.alive():
            worker.process.send_signal(signal.SIGTERM)
            try:
                worker.process.wait(timeout)
            except subprocess.TimeoutExpired:
                worker.process.kill()
        worker.process.wait(timeout)

    def workers(self) -> list[WorkerProcess]:
        with self._lock:
            return list(self._workers.values())

    def close(self) -> None:
        for worker in self.workers():
            if worker.alive():
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers():
            self.stop(worker)
