"""Where a distributed evaluation's workers run: local processes, or Ray tasks.

An executor has one method, ``run(spec, timeout)``: start ``spec.shards`` workers, wait for them
(killing any still running at the timeout) and return one line per failed worker. Whatever runs
them, a worker gets only plain values (``WorkerSpec.shard_config``: strings, numbers and the
task's options, all msgpack-able) and finds its task by import path; its summaries go to the
aggregator over kpt-wire. Nothing of ours is pickled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

EXECUTORS = ("processes", "ray")
# CURVE keys reach local worker processes through these variables, never their command line
# (which every user of the machine can read).
CURVE_ENVIRONMENT = {
    "curve_server_key": "KPT_ABTEST_CURVE_SERVER_KEY",
    "curve_public_key": "KPT_ABTEST_CURVE_PUBLIC_KEY",
    "curve_secret_key": "KPT_ABTEST_CURVE_SECRET_KEY",
}
# A worker also flushes what it holds at least this often, so a slow stream (fewer than
# flush_every values a minute) still shows up in `kpt-abtest monitor` while it runs.
FLUSH_INTERVAL_S = 1.0


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker of one evaluation is told: where to send, what to run, how often."""

    endpoint: str
    task: str  # "package.module:function", called as function(shard, shards, reporter, **options)
    shards: int
    options: Mapping[str, Any] = field(default_factory=dict)
    flush_every: int = 1000
    flush_interval_s: float | None = FLUSH_INTERVAL_S
    # run_worker's curve_server_key / curve_public_key / curve_secret_key (Z85 text), or empty
    curve: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.shards) != self.shards or self.shards < 1:
            raise ValueError(f"n_workers must be a whole number >= 1, got {self.shards!r}")
        try:
            json.dumps(dict(self.options))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"task options must be plain values (str, number, bool, None, list, dict), as "
                f"they travel to workers as JSON/msgpack, not pickle: {error}"
            ) from None

    def shard_config(self, shard: int, worker_id: str) -> dict[str, Any]:
        """run_worker's keyword arguments for one shard: plain, msgpack-able values only."""
        return {
            "endpoint": self.endpoint,
            "task": self.task,
            "shard": shard,
            "shards": self.shards,
            "worker_id": worker_id,
            "options": dict(self.options),
            "flush_every": self.flush_every,
            "flush_interval_s": self.flush_interval_s,
            **self.curve,
        }


class WorkerExecutor(Protocol):
    """Runs the workers of one evaluation; see the module docstring."""

    def run(self, spec: WorkerSpec, timeout: float) -> list[str]: ...


class ProcessExecutor:
    """Workers as local processes: ``python -m kpt.abtest worker ...`` (the default)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})

    def run(self, spec: WorkerSpec, timeout: float) -> list[str]:
        env = {**self.env, **{CURVE_ENVIRONMENT[k]: v for k, v in spec.curve.items()}}
        with launch_workers(
            spec.endpoint, spec.task, spec.shards, options=spec.options, env=env,
            flush_every=spec.flush_every, flush_interval_s=spec.flush_interval_s,
        ) as pool:  # fmt: skip
            codes = pool.wait(timeout)
            return _failures(pool.processes, codes)


def curve_from_environment() -> dict[str, str]:
    """The CURVE keys a local worker process was given (see CURVE_ENVIRONMENT)."""
    return {k: os.environ[v] for k, v in CURVE_ENVIRONMENT.items() if os.environ.get(v)}


def executor_for(
    executor: str | WorkerExecutor,
    env: Mapping[str, str] | None = None,
    ray_address: str | None = None,
) -> WorkerExecutor:
    """An executor by name ("processes", "ray"), or the object itself."""
    if not isinstance(executor, str):
        if not callable(getattr(executor, "run", None)):
            raise ValueError(
                f"executor {executor!r} has no run(spec, timeout) method; pass one of "
                f"{', '.join(EXECUTORS)} or an object with it"
            )
        return executor
    if executor == "processes":
        return ProcessExecutor(env)
    if executor == "ray":
        try:
            from kpt.abtest._ray_workers import RayExecutor  # imports ray: an optional extra
        except ImportError as error:
            raise ImportError(
                f"executor 'ray' needs Ray ({error}): pip install 'kpt-abtest[ray]'"
            ) from None
        return RayExecutor(address=ray_address, env=env)
    raise ValueError(f"executor {executor!r} unknown; use one of {', '.join(EXECUTORS)}")


class WorkerPool:
    """Worker processes started with ``launch_workers``; always stopped on exit."""

    def __init__(self, processes: list[subprocess.Popen]) -> None:
        self.processes = processes

    def wait(self, timeout: float) -> list[int]:
        """Exit codes; processes still running at the deadline are killed (code -9)."""
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return [p.returncode for p in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        self.wait(5)
        for process in self.processes:
            log = getattr(process, "log", None)
            if log is not None:
                log.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def launch_workers(
    endpoint: str,
    task: str,
    n_workers: int,
    *,
    options: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    flush_every: int = 1000,
    flush_interval_s: float | None = FLUSH_INTERVAL_S,
) -> WorkerPool:
    """Start ``n_workers`` processes, shard i of n each, streaming to ``endpoint``."""
    if int(n_workers) != n_workers or n_workers < 1:
        raise ValueError(f"n_workers must be a whole number >= 1, got {n_workers!r}")
    options_json = json.dumps(dict(options or {}))
    environment = {**os.environ, **dict(env or {})}
    processes = []
    try:
        for shard in range(n_workers):
            argv = [
                sys.executable, "-m", "kpt.abtest", "worker", endpoint, "--task", task,
                "--shard", str(shard), "--shards", str(n_workers), "--worker-id", f"w{shard}",
                "--options", options_json, "--flush-every", str(flush_every),
                "--flush-interval", str(flush_interval_s or 0),
            ]  # fmt: skip
            # stderr to a file, not a pipe: a chatty worker can never block on a full pipe
            log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by WorkerPool.stop()
            processes.append(subprocess.Popen(argv, env=environment, stderr=log))
            processes[-1].log = log
    except BaseException:
        WorkerPool(processes).stop()
        raise
    return WorkerPool(processes)


def _failures(processes: Sequence[subprocess.Popen], codes: Sequence[int]) -> list[str]:
    failures = []
    for shard, (process, code) in enumerate(zip(processes, codes)):
        if code != 0:
            log = getattr(process, "log", None)
            stderr = ""
            if log is not None:
                log.seek(0)
                stderr = log.read().decode(errors="replace")[-800:]
            reason = "killed at the timeout" if code == -9 else f"exit code {code}"
            failures.append(f"worker {shard}: {reason}: {stderr.strip()}")
    return failures
