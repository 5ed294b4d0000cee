"""fleet.toml: the workers a router launches, its policy, and its autoscaling.

policy = "predicted"            # or "p2c", "round_robin"
heartbeat_s = 1.0
launcher = "ray"                # optional: "local" (default, child processes) or "ray" (actors)
ray_address = "auto"            # the Ray to join (default: RAY_ADDRESS, else a new local one)
ray_placement_timeout_s = 300   # how long a worker may wait for a node that offers its resources
bind_host = "0.0.0.0"           # optional: listen beyond loopback (the fleet makes CURVE keys)
advertise_host = "head.example" # optional: the name other hosts reach a wildcard bind by
[[workers]]
model = "tiny"                  # the name clients ask for
path = "/models/tiny"           # a Hugging Face model folder
device = "cpu"                  # or "kpt_sim:0", "cuda:1", ...
variant = "fp32"                # optional; dtype = "float32", num_kv_blocks, max_num_seqs,
count = 1                       # threads, env = {...} also optional
profile = "mi300x"              # kpt_sim workers: the chip profile (KPT_SIM_PROFILE)
step_clock = "device"           # route by the engine's clock (simulated time on kpt_sim)
extra_models = { other = "/models/other" }   # more models on the same worker, loaded on
memory_budget_mb = 512          # demand within this budget, least recently used evicted
[autoscale]                     # optional: clones the first worker of `model`
model = "tiny"
min_workers = 1
max_workers = 3
target_queue = 4
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpt.serve.fleet._autoscaler import ScalingPolicy
from kpt.serve.fleet._launcher import WorkerSpec
from kpt.serve.fleet._messages import HEARTBEAT_S

_SPEC_FIELDS = {f.name for f in dataclasses.fields(WorkerSpec)} - {"model_dir"}
_SCALING_FIELDS = {f.name for f in dataclasses.fields(ScalingPolicy)}
LAUNCHERS = ("local", "ray")


@dataclass(frozen=True)
class FleetConfig:
    workers: list[WorkerSpec]
    policy: str = "predicted"
    heartbeat_s: float = HEARTBEAT_S
    autoscale: ScalingPolicy | None = None
    autoscale_spec: WorkerSpec | None = None
    launcher: str = "local"  # one of LAUNCHERS
    ray_address: str | None = None
    ray_placement_timeout_s: float | None = None  # None: RayLauncher's default
    bind_host: str | None = None  # None: loopback
    advertise_host: str | None = None


def load_fleet_config(path: str | Path) -> FleetConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read fleet config {path}: {exc}") from exc
    return parse_fleet_config(raw, base=path.parent)


def parse_fleet_config(raw: dict[str, Any], base: Path = Path(".")) -> FleetConfig:
    workers: list[WorkerSpec] = []
    for i, entry in enumerate(raw.get("workers") or []):
        entry = dict(entry)
        count = entry.pop("count", 1)
        if "path" not in entry or "model" not in entry:
            raise ValueError(
                f"[[workers]] entry {i} needs model (a name) and path (a folder): {entry}"
            )
        model_dir = Path(entry.pop("path"))
        unknown = set(entry) - _SPEC_FIELDS
        if unknown:
            raise ValueError(
                f"[[workers]] entry {i}: unknown keys {sorted(unknown)}; known: path, count, "
                f"{', '.join(sorted(_SPEC_FIELDS))}"
            )
        extra = entry.pop("extra_models", None) or {}
        if not isinstance(extra, dict):
            raise ValueError(
                f"[[workers]] entry {i}: extra_models must be a table of name = folder, "
                f"got {extra!r}"
            )
        extra = {str(name): str(_resolve(Path(folder), base)) for name, folder in extra.items()}
        spec = WorkerSpec(model_dir=str(_resolve(model_dir, base)), extra_models=extra, **entry)
        workers.extend([spec] * int(count))
    scaling = raw.get("autoscale")
    policy = spec_to_scale = None
    if scaling is not None:
        scaling = dict(scaling)
        model = scaling.pop("model", workers[0].model if workers else None)
        spec_to_scale = next((w for w in workers if w.model == model), None)
        if spec_to_scale is None:
            raise ValueError(f"[autoscale] model {model!r} has no [[workers]] entry to clone")
        unknown = set(scaling) - _SCALING_FIELDS
        if unknown:
            raise ValueError(
                f"[autoscale]: unknown keys {sorted(unknown)}; known: model, "
                + ", ".join(sorted(_SCALING_FIELDS))
            )
        policy = ScalingPolicy(**scaling)
    if not workers:
        raise ValueError("the fleet config lists no [[workers]]; add at least one")
    launcher = str(raw.get("launcher", "local"))
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher {launcher!r}: use one of {', '.join(LAUNCHERS)}")
    timeout = raw.get("ray_placement_timeout_s")
    return FleetConfig(
        workers=workers,
        policy=str(raw.get("policy", "predicted")),
        heartbeat_s=float(raw.get("heartbeat_s", HEARTBEAT_S)),
        autoscale=policy,
        autoscale_spec=spec_to_scale,
        launcher=launcher,
        ray_address=raw.get("ray_address"),
        ray_placement_timeout_s=None if timeout is None else float(timeout),
        bind_host=_optional_str(raw, "bind_host"),
        advertise_host=_optional_str(raw, "advertise_host"),
    )


def _optional_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not (isinstance(value, str) and value):
        raise ValueError(f"{key} = {value!r}: a host name or address (a non-empty string)")
    return value


def _resolve(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path
