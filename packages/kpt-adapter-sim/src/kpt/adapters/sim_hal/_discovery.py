"""What kpt_sim devices exist, without starting a daemon or allocating memory.

Three sources, in order: the connected runtime (this process already uses kpt_sim); the daemon
at KPT_SIM_ENDPOINT, asked once per adapter with a short timeout (its answer kept in the
adapter's DiscoveryCache); or, for the embedded daemon that would be started on first use, the
chip profile files (kpt.sim.load_profile) named by KPT_SIM_PROFILE. KPT_SIM_VISIBLE_DEVICES
applies to all three.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from kpt.adapters.sim_hal._errors import KptSimDeviceLostError
from kpt.adapters.sim_hal._settings import Settings
from kpt.adapters.sim_hal._visible import check_visible

# The client's runtime module: present in sys.modules once this process uses kpt_sim. Looked up,
# never imported: importing kpt.adapters.sim registers the device, which discovery must not do.
RUNTIME_MODULE = "kpt.adapters.sim._runtime"

PROBE_TIMEOUT_S = 2.0
# `kpt doctor` probes an adapter several times: a daemon that did not answer is not asked again
# for this long (each ask costs the whole timeout), yet one started later is found.
FAILURE_MEMORY_S = 30.0


class DaemonUnreachable(KptSimDeviceLostError):
    """The daemon at KPT_SIM_ENDPOINT did not answer the probe (the message says why): its
    devices are as good as lost, hence a KptSimDeviceLostError."""


class DiscoveryCache:
    """What daemons answered one SimAdapter: each endpoint's device list (answers do not change),
    and for FAILURE_MEMORY_S that one did not answer (each ask costs the whole timeout)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked: dict[str, list[dict]] = {}  # endpoint -> daemon devices
        self._failed: dict[str, tuple[float, DaemonUnreachable]] = {}  # endpoint -> (when, why)

    def daemon_devices(self, endpoint: str) -> list[dict]:
        """The devices of the daemon at ``endpoint`` (daemon indices), asked once."""
        with self._lock:
            known = self._asked.get(endpoint)
            failed = self._failed.get(endpoint)
        if known is not None:
            return known
        if failed is not None and time.monotonic() - failed[0] < FAILURE_MEMORY_S:
            raise failed[1]
        try:
            known = _call(endpoint, lambda c: c.devices())
        except DaemonUnreachable as exc:
            with self._lock:
                self._failed[endpoint] = (time.monotonic(), exc)
            raise
        with self._lock:
            self._asked[endpoint] = known
            self._failed.pop(endpoint, None)
        return known


def connected_runtime() -> Any:
    """This process's kpt_sim Runtime when it already uses the device, else None."""
    module = sys.modules.get(RUNTIME_MODULE)
    if module is None or not module.is_started():
        return None
    return module.runtime()


def source() -> str:
    if connected_runtime() is not None:
        return "a connected kpt-sim daemon"
    endpoint = Settings.from_environ().endpoint
    if endpoint:
        return f"the kpt-sim daemon at {endpoint}"
    return "an embedded kpt-sim daemon (started on use; capabilities from its profile files)"


def device_infos(cache: DiscoveryCache) -> list[dict]:
    """This process's devices (local indices), like SimClient.devices(). Starts nothing.

    Raises DaemonUnreachable when KPT_SIM_ENDPOINT is set and its daemon does not answer."""
    runtime = connected_runtime()
    if runtime is not None:
        return runtime.devices
    settings = Settings.from_environ()
    endpoint = settings.endpoint
    daemon_devices = cache.daemon_devices(endpoint) if endpoint else _from_profiles()
    visible = settings.visible
    if visible is None:
        return [dict(d) for d in daemon_devices]
    check_visible(visible, len(daemon_devices))
    return [
        {**daemon_devices[d], "index": local, "daemon_index": d} for local, d in enumerate(visible)
    ]


def memory_info(index: int, cache: DiscoveryCache) -> tuple[int, int]:
    """(free, total) bytes of local device ``index`` without starting a daemon."""
    info = device_infos(cache)[index]
    total = int(info.get("memory_total") or 0)
    runtime = connected_runtime()
    if runtime is not None:
        stats = runtime.client.memory_stats(index)
        return int(stats["free"]), int(stats["total"])
    endpoint = Settings.from_environ().endpoint
    if endpoint:
        stats = _call(endpoint, lambda c: c.memory_stats(info.get("daemon_index", index)))
        return int(stats["free"]), int(stats["total"])
    return total, total  # an embedded daemon not started yet holds nothing


def _call(endpoint: str, ask: Any) -> Any:
    from kpt.sim import SimClient

    scheme, _, path = endpoint.partition("://")
    if scheme in ("ipc", "unix") and not os.path.exists(path):
        # No socket file: nothing serves there (asking would cost the client's retries).
        raise DaemonUnreachable(
            f"KPT_SIM_ENDPOINT={endpoint!r}: no daemon serves there (no socket file); start one "
            "with `kpt-sim serve --endpoint ...` or unset KPT_SIM_ENDPOINT for an embedded one"
        )
    try:
        client = SimClient(endpoint, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:
        raise DaemonUnreachable(
            f"KPT_SIM_ENDPOINT={endpoint!r}: cannot connect ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        return ask(client)
    except Exception as exc:
        raise DaemonUnreachable(
            f"the kpt-sim daemon at KPT_SIM_ENDPOINT={endpoint!r} did not answer within "
            f"{PROBE_TIMEOUT_S:g} s ({type(exc).__name__}: {exc}); start one with "
            "`kpt-sim serve --endpoint ...` or unset KPT_SIM_ENDPOINT for an embedded one"
        ) from exc
    finally:
        try:
            client.close()
        except Exception:  # closing a client of a dead daemon: nothing left to release
            pass


def _from_profiles() -> list[dict]:
    """The devices an embedded daemon would have, from KPT_SIM_PROFILE / KPT_SIM_DEVICES."""
    from kpt.sim import load_profile, parse_profile_spec

    settings = Settings.from_environ()
    spec = settings.profile
    if "," in spec or ":" in spec:
        names = parse_profile_spec(spec)
    else:
        names = [spec] * settings.daemon_devices()
    summaries = {name: load_profile(name).summary() for name in set(names)}
    return [{"index": i, **summaries[name]} for i, name in enumerate(names)]


def env_devices() -> int | None:
    """KPT_SIM_DEVICES, or None to take the count from a mixed profile spec."""
    return Settings.from_environ().devices


def embedded_daemon_devices() -> int:
    """How many devices an embedded daemon gets: KPT_SIM_DEVICES, else the profile spec's."""
    return Settings.from_environ().daemon_devices()
