"""Replay a recorded op trace in timing-only mode: per-device summary and predicted total.

Format (JSON): {"format": "kpt-sim-ops", "version": 1, "profile": "h100-sxm", "devices": 2,
"topology": "switch", "nodes": 1, "ops": [...]}; each op is an object with an "op" field:

    launch      device, class, flops, bytes, [dtype, shape, stream, name, buffers, tensors]
    alloc       device, bytes, id          free   id
    h2d / d2h   device, bytes, [stream]
    copy        src, dst (devices), bytes, [stream]
    record      device, event (a name), [stream]      wait   event, device, [stream]
    wait_stream device, on (a stream), [stream]: stream waits for what `on` was issued so far
    collective  kind, bytes, [devices, algorithm, root, src, dst, stream]
    sync        [device]
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kpt.sim._errors import InvalidRequestError
from kpt.sim._host_model import MAX_HOST_OPS
from kpt.sim._op_cost import OpCost
from kpt.sim._profiles import Profile
from kpt.sim._simulator import Simulator

FORMAT = "kpt-sim-ops"


def replay(
    source: str | Path | dict | Iterable[dict],
    profile: str | Profile | None = None,
    devices: int | None = None,
    topology: str | None = None,
    simulator: Simulator | None = None,
) -> dict[str, Any]:
    """Run an op trace (a path, a parsed document, or a list of ops); arguments override
    the document's profile/devices/topology. Returns predicted_s, interval_s (low, high: the
    profile's calibration residuals per op class, kpt.sim._uncertainty), per-device rows."""
    doc: dict[str, Any]
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidRequestError(f"op trace {str(path)!r} does not exist")
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise InvalidRequestError(f"op trace {str(path)!r} is not JSON: {exc}") from None
    elif isinstance(source, dict):
        doc = source
    else:
        doc = {"ops": source}
    if doc.get("format", FORMAT) != FORMAT or doc.get("version", 1) != 1:
        raise InvalidRequestError(
            f"op trace format {doc.get('format')!r} version {doc.get('version')!r}: "
            f"this kpt-sim replays {FORMAT!r} version 1"
        )
    ops = doc.get("ops")
    if not isinstance(ops, list):
        raise InvalidRequestError("op trace has no 'ops' list")
    sim = simulator or Simulator(
        profile or doc.get("profile", "h100-sxm"),
        devices=devices or doc.get("devices", 1),
        topology=topology or doc.get("topology", "switch"),
        nodes=doc.get("nodes", 1),
        trace=False,
    )
    wall = time.perf_counter()
    _run(sim, ops)
    sim.synchronize()
    wall = time.perf_counter() - wall
    end = max((d.finished_at() for d in sim.devices), default=0.0)
    rows = sim.summary()
    for row in rows:
        row["utilization"] = row["busy_s"] / end if end > 0 else 0.0
    topology = sim.topology.kind + (
        f", {sim.topology.nodes} nodes" if sim.topology.nodes > 1 else ""
    )
    low, _, high = sim.interval()
    return {"predicted_s": end, "interval_s": (low, high), "ops": len(ops), "wall_s": wall,
            "topology": topology, "devices": rows}  # fmt: skip


def format_replay(summary: dict[str, Any], source: str = "the trace") -> str:
    """`kpt-sim replay`'s table: the predicted total first, then a row per device."""
    rows = summary["devices"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["profile"]] = counts.get(r["profile"], 0) + 1
    cluster = " + ".join(f"{n} x {name}" for name, n in counts.items())
    if summary.get("topology"):
        cluster += f" ({summary['topology']})"
    low, high = summary.get("interval_s", (summary["predicted_s"],) * 2)
    band = ""
    if (low, high) != (summary["predicted_s"],) * 2:
        band = f", calibration interval {format_seconds(low)} - {format_seconds(high)}"
    lines = [
        f"predicted total: {format_seconds(summary['predicted_s'])} (simulated{band})",
        f"replayed {summary['ops']} ops from {source} on {cluster} in "
        f"{summary['wall_s']:.3f} s of wall time",
        "",
    ]
    header = ("device", "profile", "kernels", "busy", "ends at", "utilization", "peak memory")
    cells = [
        (str(r["device"]), r["profile"], str(r["ops"]), format_seconds(r["busy_s"]),
         format_seconds(r["end_s"]), f"{100 * r['utilization']:.1f}%",
         format_bytes(r["peak_bytes"]))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for line in (header, *cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())
    return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "never"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.2f} {unit}"
    return f"{seconds * 1e9:.1f} ns" if seconds else "0"


def format_bytes(nbytes: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def _run(sim: Simulator, ops: list) -> None:
    buffers: dict[Any, int] = {}
    events: dict[Any, int] = {}
    launch = sim.launch
    for i, op in enumerate(ops):
        try:
            kind = op["op"]
            if kind == "launch":
                cost = OpCost(
                    op["class"],
                    op.get("flops", 0.0),
                    op.get("bytes", 0.0),
                    op.get("dtype", "fp32"),
                    tuple(op["shape"]) if op.get("shape") else None,
                )
                host_ops = op.get("host_ops", 0)
                if type(host_ops) is not int or not 0 <= host_ops < MAX_HOST_OPS:
                    raise InvalidRequestError(
                        f"'host_ops' = {host_ops!r:.40} must be an integer in [0, {MAX_HOST_OPS})"
                    )
                launch(op["device"], cost, op.get("stream", 0), (), op.get("name"),
                       op.get("tensors"), host_ops=host_ops)  # fmt: skip
            elif kind == "alloc":
                buffers[op["id"]] = sim.alloc(op["device"], op["bytes"])
            elif kind == "free":
                if op.get("id") not in buffers:
                    raise InvalidRequestError(f"buffer id {op.get('id')!r} was never allocated")
                sim.free(buffers.pop(op["id"]))
            elif kind == "h2d":
                sim.h2d(op["device"], op["bytes"], op.get("stream", 0))
            elif kind == "d2h":
                sim.d2h(op["device"], op["bytes"], op.get("stream", 0))
            elif kind == "copy":
                sim.transfer(op["src"], op["dst"], op["bytes"], op.get("stream", 0))
            elif kind == "record":
                events[op["event"]] = sim.record_event(op["device"], op.get("stream", 0))
            elif kind == "wait":
                if op.get("event") not in events:
                    raise InvalidRequestError(
                        f"event {op.get('event')!r} is waited on before any 'record' of it"
                    )
                sim.wait_event(events[op["event"]], op["device"], op.get("stream", 0))
            elif kind == "wait_stream":
                sim.wait_stream(op["device"], op.get("stream", 0), op["on"])
            elif kind == "collective":
                options = {
                    k: op[k] for k in ("algorithm", "root", "src", "dst", "stream") if k in op
                }
                sim.collective(op["kind"], op["bytes"], op.get("devices"), **options)
            elif kind == "sync":
                sim.synchronize(op.get("device"))
            else:
                raise InvalidRequestError(f"unknown op {kind!r}")
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"op trace entry #{i} ({op!r}): {exc}") from None
        except (KeyError, TypeError) as exc:
            raise InvalidRequestError(
                f"op trace entry #{i} ({op!r}) is missing or has a bad field: {exc}"
            ) from None
