"""A kpt_sim device's health as its daemon judges it, asked fresh on every check.

The daemon's ``devices`` answer carries, per device, ``health = {"state": "ok" | "degraded" |
"hung" | "lost", "reason": str}`` from the faults injected into the simulator. Asked fresh
(never from the discovery cache, which holds what does not change), so an injected
``device_lost``, ``hang`` or ``straggler`` reaches ``kpt devices``, ``hal.health()``,
``hal.select()`` and the metrics exporter. A daemon too old to send the field counts as "ok".
"""

from __future__ import annotations

from typing import Any

from kpt.adapters.sim_hal import _discovery
from kpt.adapters.sim_hal._errors import KptSimDeviceLostError
from kpt.hal import HealthReport, HealthState

# hung and lost are failures: select() never picks them; a straggler is degraded (ranked last).
DAEMON_STATES = {
    "ok": HealthState.HEALTHY,
    "degraded": HealthState.DEGRADED,
    "hung": HealthState.FAILED,
    "lost": HealthState.FAILED,
}


def device_health(index: int, cache: _discovery.DiscoveryCache) -> HealthReport:
    """Local device ``index``'s health: the daemon's verdict plus memory and busy readings
    (``cache``: the adapter's discovery answers, for the device's daemon index)."""
    try:
        verdict, stats = _ask(index, cache)
    except Exception as exc:  # a dead daemon is a failed device, with the reason
        kind = type(exc).__name__
        if isinstance(exc, KptSimDeviceLostError):
            kind = "KptSimDeviceLostError"  # the public type, not the probe's subclass
        return HealthReport(HealthState.FAILED, f"{kind}: {exc}")
    readings = {
        key: float(stats[source])
        for key, source in (
            ("memory_free", "free"),
            ("memory_total", "total"),
            ("busy_s", "busy_s"),  # simulated seconds the compute engine was busy
            ("clock_s", "now_s"),  # the simulated clock: utilization = d(busy_s) / d(clock_s)
        )
        if isinstance(stats.get(source), int | float)
    }
    return judge(verdict, readings)


def judge(verdict: Any, readings: dict[str, float]) -> HealthReport:
    """The HealthReport for a daemon's ``health`` field (absent or malformed: "ok")."""
    if not isinstance(verdict, dict):
        verdict = {}
    state = verdict.get("state", "ok")
    reason = str(verdict.get("reason") or "")
    if state not in DAEMON_STATES:
        return HealthReport(
            HealthState.DEGRADED,
            f"the daemon reports health {state!r}, which this adapter does not know "
            f"({', '.join(DAEMON_STATES)}); upgrade kpt-adapter-sim",
            readings,
        )
    text = f"{state}: {reason}" if state != "ok" else reason
    return HealthReport(DAEMON_STATES[state], text, readings)


def _ask(index: int, cache: _discovery.DiscoveryCache) -> tuple[Any, dict]:
    """(the daemon's health field, its memory_stats) for local device ``index``."""
    runtime = _discovery.connected_runtime()
    if runtime is not None:
        client = runtime.client
        raw = getattr(client, "_client", client)  # a VisibleClient caches devices(): go under it
        daemon_index = client.daemon_index(index) if hasattr(client, "daemon_index") else index
        return _entry(raw.devices(), daemon_index), raw.memory_stats(daemon_index)
    endpoint = _discovery.Settings.from_environ().endpoint
    if endpoint:
        daemon_index = _discovery.device_infos(cache)[index].get("daemon_index", index)
        devices, stats = _discovery._call(
            endpoint, lambda c: (c.devices(), c.memory_stats(daemon_index))
        )
        return _entry(devices, daemon_index), stats
    # The embedded daemon starts on first use: nothing can have hit a device not started yet.
    free, total = _discovery.memory_info(index, cache)
    return {"state": "ok", "reason": "embedded daemon not started yet"}, {
        "free": free,
        "total": total,
    }


def _entry(devices: list[dict], daemon_index: int) -> Any:
    if not 0 <= daemon_index < len(devices):
        raise KptSimDeviceLostError(
            f"the daemon lists {len(devices)} device(s); device {daemon_index} is gone"
        )
    return devices[daemon_index].get("health")
