"""Workers as Ray tasks, for when one machine is not enough (``pip install 'kpt-abtest[ray]'``).

Each worker is one Ray task running ``run_worker`` with ``WorkerSpec.shard_config``: strings,
numbers and the task's plain options. What Ray itself serializes: the task's arguments (that
config dict and nothing else, packed by Ray's serializer, msgpack for such plain values) and
the remote function, which cloudpickle sends by reference (``kpt.abtest._ray_workers:ray_task``:
the worker imports it, and the task function by its import path, from its own environment). The
return value is a count. The data, the summaries, travel over kpt-wire to the aggregator, never
through Ray's object store.

The aggregator listens on loopback unless given another endpoint, so tasks must run on its host
unless ``endpoint=`` names an address the cluster's nodes reach (kpt-wire binds a non-loopback
address only with CURVE keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray

from kpt.abtest._distributed import run_worker
from kpt.abtest._executors import WorkerSpec


def ray_task(config: dict[str, Any]) -> int:
    """One worker, inside a Ray task: the summaries it sent (run_worker's result)."""
    return run_worker(**config)


class RayExecutor:
    """Runs each shard as a Ray task; a Ray it did not start is left running afterwards."""

    def __init__(
        self,
        address: str | None = None,
        env: Mapping[str, str] | None = None,
        num_cpus: float = 1.0,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.env = dict(env or {})
        self.num_cpus = num_cpus
        self.init_options = dict(init_options or {})

    def run(self, spec: WorkerSpec, timeout: float) -> list[str]:
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, **self.init_options)
        try:
            return self._run(spec, timeout)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, spec: WorkerSpec, timeout: float) -> list[str]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "max_retries": 0}
        if self.env:
            options["runtime_env"] = {"env_vars": self.env}
        remote = ray.remote(ray_task)
        refs = [
            remote.options(name=f"kpt-abtest-worker-{shard}", **options).remote(
                spec.shard_config(shard, f"ray-w{shard}")
            )
            for shard in range(spec.shards)
        ]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        failures = []
        for shard, ref in enumerate(refs):
            if ref not in ready:
                ray.cancel(ref, force=True)
                failures.append(f"worker {shard}: Ray task still running at the {timeout:g} s "
                                "timeout; cancelled")  # fmt: skip
                continue
            try:
                ray.get(ref)
            except Exception as error:  # RayTaskError carries the worker's own traceback
                failures.append(f"worker {shard}: Ray task failed: {str(error)[-800:]}")
        return failures
