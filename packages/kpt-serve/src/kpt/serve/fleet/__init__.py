"""kpt.serve.fleet: many engines behind one OpenAI-compatible endpoint.

Worker processes (one Engine on one device each, over kpt.wire), a router that places requests
by predicted completion time with prefix affinity and fails over when a worker dies, an HTTP
API with Prometheus metrics, an autoscaler and a load generator (`kpt-serve bench`).
The HTTP parts need the `http` extra: pip install 'kpt-serve[http]'. Workers start as child
processes (LocalLauncher) or as Ray actors (RayLauncher, the `ray` extra: imported, and Ray
with it, only when asked for).
"""

from kpt.serve.fleet._autoscaler import Autoscaler, FleetLoad, ScalingPolicy, decide
from kpt.serve.fleet._config import FleetConfig, load_fleet_config, parse_fleet_config
from kpt.serve.fleet._fleet import Fleet
from kpt.serve.fleet._launcher import (
    Launcher,
    LocalLauncher,
    WorkerHandle,
    WorkerProcess,
    WorkerSpec,
    WorkerStartError,
)
from kpt.serve.fleet._model_set import ModelBusy, ModelSet, footprint_bytes
from kpt.serve.fleet._network import FleetKeys, FleetNetwork
from kpt.serve.fleet._requests import Delta, FleetRequest, Slo
from kpt.serve.fleet._router import NoWorkerError, Router
from kpt.serve.fleet._scoring import (
    Candidate,
    PrefixIndex,
    StepTimeModel,
    make_policy,
    predicted_ms,
    predicted_ttft_ms,
    prefix_keys,
)
from kpt.serve.fleet._worker import Worker

__all__ = [
    "Autoscaler",
    "Candidate",
    "Delta",
    "Fleet",
    "FleetConfig",
    "FleetKeys",
    "FleetLoad",
    "FleetNetwork",
    "FleetRequest",
    "Launcher",
    "LocalLauncher",
    "ModelBusy",
    "ModelSet",
    "NoWorkerError",
    "PrefixIndex",
    "RayLauncher",
    "Router",
    "ScalingPolicy",
    "Slo",
    "StepTimeModel",
    "Worker",
    "WorkerHandle",
    "WorkerProcess",
    "WorkerSpec",
    "WorkerStartError",
    "decide",
    "footprint_bytes",
    "load_fleet_config",
    "make_policy",
    "parse_fleet_config",
    "predicted_ms",
    "predicted_ttft_ms",
    "prefix_keys",
    "run_virtual",
    "submit_virtual",
]


def __getattr__(name: str):
    # RayLauncher imports Ray, which is optional and slow to import: only when asked for.
    if name == "RayLauncher":
        from kpt.serve.fleet._ray_launcher import RayLauncher

        return RayLauncher
    if name in ("run_virtual", "submit_virtual"):  # they need the http extra (httpx)
        from kpt.serve.fleet import _virtual_bench

        return getattr(_virtual_bench, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
