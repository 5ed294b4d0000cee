"""Every KPT_SIM_* setting, parsed in one place.

The client's Runtime parses them once, when it connects (``Runtime.settings``); discovery parses
them afresh at each query (a daemon started, or a variable set, after the last query is seen).
The native library's settings (``NativeSettings``: ``KPT_SIM_NATIVE_GUARD``,
``KPT_SIM_EXTENSIONS_DIR`` and the compiler, ``CXX``) are read when the device is registered,
before any connection, and never refuse a value. Errors name the variable, its value and what
to give instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from kpt.adapters.sim_hal._visible import ENV as VISIBLE_ENV
from kpt.adapters.sim_hal._visible import parse_visible

DEFAULT_PROFILE = "h100-sxm"
DEFAULT_COMPILER = "c++"


@dataclass(frozen=True)
class NativeSettings:
    """How kpt_sim's native library (csrc/*.cpp: the device guard, the PrivateUse1 hooks) is
    built and found; read at device registration, so nothing here raises."""

    enabled: bool = True  # KPT_SIM_NATIVE_GUARD=0: no native library (Python hooks instead)
    # Where builds are cached: KPT_SIM_EXTENSIONS_DIR, else $TORCH_EXTENSIONS_DIR/kpt_sim, else
    # $XDG_CACHE_HOME/kpt/extensions; None: ~/.cache/kpt/extensions
    extensions_dir: str | None = None
    compiler: str = DEFAULT_COMPILER  # CXX: the C++ compiler that builds it

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> NativeSettings:
        env = os.environ if environ is None else environ
        return cls(
            enabled=env.get("KPT_SIM_NATIVE_GUARD", "1").strip() != "0",
            extensions_dir=_extensions_dir(env),
            compiler=env.get("CXX", DEFAULT_COMPILER),
        )


@dataclass(frozen=True)
class Settings:
    endpoint: str | None = None  # KPT_SIM_ENDPOINT: a running daemon; None: start an embedded one
    profile: str = DEFAULT_PROFILE  # KPT_SIM_PROFILE: a profile or a spec "h100-sxm:2,mi300x"
    devices: int | None = None  # KPT_SIM_DEVICES; None: as many as the profile spec names
    numerics: bool = True  # KPT_SIM_NUMERICS=0: timing only
    visible: tuple[int, ...] | None = None  # KPT_SIM_VISIBLE_DEVICES: daemon indices seen
    heartbeat_s: float | None = None  # KPT_SIM_HEARTBEAT_S; None: SimClient's defaults
    launch_blocking: bool = False  # KPT_SIM_LAUNCH_BLOCKING=1: wait after every op
    native: NativeSettings = NativeSettings()  # KPT_SIM_NATIVE_GUARD, KPT_SIM_EXTENSIONS_DIR, CXX

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        profile = env.get("KPT_SIM_PROFILE") or DEFAULT_PROFILE
        visible = parse_visible(env.get(VISIBLE_ENV) or "")
        return cls(
            endpoint=env.get("KPT_SIM_ENDPOINT") or None,
            profile=profile,
            devices=_devices(env.get("KPT_SIM_DEVICES"), profile),
            numerics=_numerics(env.get("KPT_SIM_NUMERICS", "1")),
            visible=None if visible is None else tuple(visible),
            heartbeat_s=_heartbeat(env.get("KPT_SIM_HEARTBEAT_S")),
            launch_blocking=env.get("KPT_SIM_LAUNCH_BLOCKING", "0") == "1",
            native=NativeSettings.from_environ(env),
        )

    def daemon_devices(self) -> int:
        """How many devices an embedded daemon gets: KPT_SIM_DEVICES, else the spec's count."""
        if self.devices is not None:
            return self.devices
        from kpt.sim import parse_profile_spec

        return len(parse_profile_spec(self.profile))


def _extensions_dir(env: Mapping[str, str]) -> str | None:
    if env.get("KPT_SIM_EXTENSIONS_DIR"):
        return env["KPT_SIM_EXTENSIONS_DIR"]
    if env.get("TORCH_EXTENSIONS_DIR"):
        return os.path.join(env["TORCH_EXTENSIONS_DIR"], "kpt_sim")
    if env.get("XDG_CACHE_HOME"):
        return os.path.join(env["XDG_CACHE_HOME"], "kpt", "extensions")
    return None


def _devices(value: str | None, profile: str) -> int | None:
    if value is None:
        return None if ":" in profile else 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"KPT_SIM_DEVICES={value!r}: give a positive number of devices")
    return count


def _numerics(value: str) -> bool:
    value = value.strip().lower()
    if value not in {"0", "1", "on", "off", "true", "false", ""}:
        raise ValueError(f"KPT_SIM_NUMERICS={value!r}: use 1 (values computed) or 0 (timing only)")
    return value not in {"0", "off", "false"}


def _heartbeat(value: str | None) -> float | None:
    """None for SimClient's defaults (a long heartbeat plus a watch on the daemon's pid when it
    runs on this host; a short heartbeat for a remote one)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"KPT_SIM_HEARTBEAT_S={value!r}: give a positive number of seconds")
    return seconds
