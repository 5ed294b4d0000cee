"""Workers as Ray actors (``pip install 'kpt-serve[ray]'``): Ray places the worker processes
and ends them; kpt.wire carries every request.

Each worker is one Ray actor, ``WorkerActor``, holding the resources its device needs
(``ray_options``): a GPU for a cuda worker, the custom resource ``kpt_sim:<profile>`` (or
``kpt_sim``) for a simulated chip, ``threads`` CPUs (1 when not given) for every worker. The
actor starts the same process LocalLauncher starts, ``python -m kpt.serve._cli worker ...``,
with its node's interpreter, and waits on it. The worker says hello to the router's inbox and
from then on talks kpt.wire only; nothing of a request passes through Ray. The worker exits
when the actor's process is gone (it watches its parent), and the actor's pending ``wait``
call completes when either ends, which is how ``alive()`` answers without a round trip. A dead
worker is replaced by the fleet (its autoscaler's minimum) asking for a new one, which Ray
places again; Ray's own actor restarts are off.

What Ray serializes: the actor's arguments (the worker's command line after the interpreter
and the environment it adds: lists and maps of strings, checked to be JSON-able before the
actor is made, which Ray packs with msgpack), the actor class by reference (the node imports
``kpt.serve.fleet._ray_launcher`` from its own kpt-serve, and with it torch, though the engine
runs in the child), and small return values (a pid, a node id, an exit code).

A router on loopback (a Fleet's default) is reached from its own node only: while the router's
endpoint is local (``kpt.wire.is_local``) every actor is pinned there, and a resource that node
lacks fails at once. A Fleet given a routable ``FleetNetwork`` binds with the fleet's key pair,
which each worker gets in its environment (through the actor's arguments), and its actors may go
to any node. Otherwise an actor waits for a node (one Ray's autoscaler may add) for at most
``placement_timeout_s``, then fails naming the resources it asked for.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from typing import Any

try:
    import ray
    from ray.exceptions import ActorUnschedulableError, GetTimeoutError, RayError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as exc:  # the optional extra
    raise ImportError(f"RayLauncher needs Ray ({exc}): pip install 'kpt-serve[ray]'") from exc

from kpt.serve.fleet._launcher import WorkerSpec, WorkerStartError, worker_arguments, worker_env
from kpt.serve.fleet._network import FleetNetwork
from kpt.wire import is_local

RESOURCE_KPT_SIM = "kpt_sim"  # a simulated chip of the node's default profile
_ACTOR_THREADS = 4  # wait() holds one for the worker's life; placed, terminate, kill


def kpt_sim_resource(profile: str | None) -> str:
    """The Ray resource a kpt_sim worker asks for: ``kpt_sim:<profile>``, or ``kpt_sim``."""
    return RESOURCE_KPT_SIM if profile is None else f"{RESOURCE_KPT_SIM}:{profile}"


def ray_options(spec: WorkerSpec) -> dict[str, Any]:
    """What the worker's actor asks Ray for: ``num_cpus`` always, ``num_gpus`` for cuda,
    ``resources`` for kpt_sim."""
    kind = spec.device.split(":", 1)[0]
    options: dict[str, Any] = {"num_cpus": spec.threads or 1}
    if kind == "cuda":
        options["num_gpus"] = 1
    elif kind == "kpt_sim":
        options["resources"] = {kpt_sim_resource(spec.profile): 1}
    elif kind != "cpu":
        raise ValueError(
            f"RayLauncher places cpu, cuda and kpt_sim workers; device {spec.device!r} has no "
            "Ray resource: run it with the local launcher"
        )
    return options


def actor_spec(spec: WorkerSpec) -> WorkerSpec:
    """The spec as a node runs it: folders made absolute (a Ray worker's current directory is
    not the driver's), and a cuda device as cuda:0, the one GPU Ray left visible to the actor
    (CUDA_VISIBLE_DEVICES); which GPU that is, Ray decides."""
    device = "cuda:0" if spec.device.split(":", 1)[0] == "cuda" else spec.device
    extra = {name: os.path.abspath(folder) for name, folder in spec.extra_models.items()}
    return replace(
        spec, model_dir=os.path.abspath(spec.model_dir), device=device, extra_models=extra
    )


class WorkerActor:
    """The body of a worker's Ray actor: the parent of the worker process, on its node."""

    def __init__(self, arguments: list[str], env: dict[str, str]) -> None:
        self._process = subprocess.Popen(
            [sys.executable, *arguments], env={**os.environ, **env}, stdin=subprocess.DEVNULL
        )

    def placed(self) -> tuple[int, str]:
        """The worker process's pid and the id of the node it runs on."""
        return self._process.pid, ray.get_runtime_context().get_node_id()

    def wait(self) -> int:
        """The worker's exit code, once it exits (this call is pending all its life)."""
        return self._process.wait()

    def terminate(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()


@dataclass(eq=False)
class RayWorker:
    """A worker started through Ray: its actor, and the pending call that ends with it."""

    worker_id: str
    spec: WorkerSpec
    pid: int  # of the worker process, on its node
    node_id: str
    actor: Any  # ray.actor.ActorHandle of WorkerActor
    exited: Any  # ray.ObjectRef of actor.wait(): ready once the process exited or the actor died

    def alive(self) -> bool:
        # Without Ray its actors are gone, and their workers with them; asking would start a
        # new Ray (Ray initializes itself on first use).
        if not ray.is_initialized():
            return False
        ready, _ = ray.wait([self.exited], timeout=0, fetch_local=False)
        return not ready

    @property
    def returncode(self) -> int | None:
        """The worker's exit code; None while it runs, or when its actor died (no code)."""
        if not ray.is_initialized() or self.alive():
            return None
        try:
            return ray.get(self.exited, timeout=0)
        except RayError:
            return None

    def exits_within(self, timeout: float) -> bool:
        if not self.alive():
            return True
        ready, _ = ray.wait([self.exited], timeout=timeout, fetch_local=False)
        return bool(ready)


class RayLauncher:
    """Worker processes as Ray actors, on the nodes that offer their devices.

    Uses the Ray this process joined already, or joins ``ray.init(address=address,
    **init_options)`` and leaves it at ``close()``. A worker starts once Ray placed its actor
    (``start`` waits for that, at most ``placement_timeout_s``); it has loaded its model once it
    registered with the router (``Fleet.wait_ready``).
    """

    def __init__(
        self,
        router_endpoint: str,
        heartbeat_s: float | None = None,
        *,
        address: str | None = None,
        placement_timeout_s: float = 120.0,
        init_options: dict[str, Any] | None = None,
        network: FleetNetwork | None = None,
    ) -> None:
        if placement_timeout_s <= 0:
            raise ValueError(f"placement_timeout_s must be > 0, got {placement_timeout_s}")
        self.router_endpoint = router_endpoint
        self.heartbeat_s = heartbeat_s
        self.network = network
        self.placement_timeout_s = placement_timeout_s
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            ray.init(address=address, **(init_options or {}))
        # A router on loopback (or ipc) is reached from its own node only: its workers run there.
        self.pinned_node: str | None = None
        if is_local(router_endpoint):
            self.pinned_node = ray.get_runtime_context().get_node_id()
        self._actor_class = ray.remote(WorkerActor)
        self._ids = itertools.count()
        self._workers: dict[str, RayWorker] = {}
        self._lock = threading.Lock()

    def start(self, spec: WorkerSpec) -> RayWorker:
        """Place the worker's actor and start its process; WorkerStartError when Ray cannot."""
        if not ray.is_initialized():  # else Ray would start a new local one of its own accord
            raise WorkerStartError(
                f"cannot start a worker of {spec.model} on {spec.device}: Ray was shut down "
                "after this launcher joined it; make a new launcher (a new Fleet)"
            )
        options = ray_options(spec)
        with self._lock:
            worker_id = f"w{next(self._ids)}-{spec.device.replace(':', '')}"
        arguments = worker_arguments(
            actor_spec(spec), worker_id, self.router_endpoint, self.heartbeat_s, self.network
        )
        env = worker_env(spec, self.network)
        json.dumps([arguments, env])  # plain values only: Ray packs them without pickle
        if self.pinned_node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                self.pinned_node, soft=False
            )
        actor = self._actor_class.options(
            max_concurrency=_ACTOR_THREADS,
            max_restarts=0,  # a replacement is a new worker the fleet asks for, not a restart
            **options,
        ).remote(arguments, env)
        try:
            pid, node_id = ray.get(actor.placed.remote(), timeout=self.placement_timeout_s)
        except (ActorUnschedulableError, GetTimeoutError) as error:
            ray.kill(actor, no_restart=True)
            raise WorkerStartError(self._unplaced(worker_id, spec, options, error)) from None
        except RayError as error:  # the actor's constructor failed: its traceback says why
            ray.kill(actor, no_restart=True)
            raise WorkerStartError(
                f"worker {worker_id} ({spec.model} on {spec.device}): its Ray actor failed to "
                f"start the worker process: {str(error)[-800:]}"
            ) from None
        worker = RayWorker(worker_id, spec, pid, node_id, actor, actor.wait.remote())
        with self._lock:
            self._workers[worker_id] = worker
        return worker

    def stop(self, worker: RayWorker, timeout: float = 5.0) -> None:
        """SIGTERM the worker, SIGKILL it after `timeout` seconds, then end its actor."""
        with self._lock:
            self._workers.pop(worker.worker_id, None)
        if not ray.is_initialized():
            return  # Ray, its actors and their workers are gone already
        if worker.alive():
            _quietly(worker.actor.terminate)
            if not worker.exits_within(timeout):
                _quietly(worker.actor.kill)
                worker.exits_within(timeout)
        ray.kill(worker.actor, no_restart=True)

    def workers(self) -> list[RayWorker]:
        with self._lock:
            return list(self._workers.values())

    def close(self) -> None:
        """Stop every worker; leave Ray if this launcher joined it."""
        for worker in self.workers():
            if worker.alive():
                _quietly(worker.actor.terminate)
        for worker in self.workers():
            self.stop(worker)
        if self._started_ray:
            ray.shutdown()

    def _unplaced(
        self, worker_id: str, spec: WorkerSpec, options: dict[str, Any], error: Exception
    ) -> str:
        custom = options.get("resources", {})
        asked = {"CPU": options["num_cpus"], **custom}
        if "num_gpus" in options:
            asked["GPU"] = options["num_gpus"]
        declare = "ray start --num-cpus N"
        if "GPU" in asked:
            declare = "ray start on a host with GPUs, which Ray finds itself"
        if custom:
            declare = f"ray start --resources='{json.dumps(dict.fromkeys(custom, 4))}'"
        cluster = (
            f"the cluster has {_named(ray.cluster_resources())}, free now "
            f"{_named(ray.available_resources())}"
        )
        if isinstance(error, ActorUnschedulableError):  # pinned to a node that lacks them
            node = next((n for n in ray.nodes() if n["NodeID"] == self.pinned_node), {})
            why = (
                f"the router's node offers no {asked} (it has "
                f"{_named(node.get('Resources', {}))}); its workers must run there, as the "
                f"router's endpoint {self.router_endpoint} is local. Start that node's Ray with "
                f"them: {declare}"
            )
        else:
            where = "no Ray node had" if self.pinned_node is None else "the router's node lacked"
            why = (
                f"{where} {asked} free within {self.placement_timeout_s:g}s ({cluster}). "
                f"Free some, start nodes that offer them ({declare}), or give Ray's autoscaler "
                "a node type that has them"
            )
        return f"worker {worker_id} ({spec.model} on {spec.device}) could not be placed: {why}"


def _quietly(method: Any) -> None:
    """Call an actor method and wait for it; an actor already gone has nothing left to do."""
    try:
        ray.get(method.remote(), timeout=30)
    except RayError:
        pass


def _named(resources: dict[str, float]) -> dict[str, float]:
    """Ray's resource table without its bookkeeping entries ("node:<ip>", memory)."""
    return {
        name: amount
        for name, amount in sorted(resources.items())
        if not name.startswith("node:") and name not in ("memory", "object_store_memory")
    }
