"""Fault descriptions: scheduled (at a sim time or after N ops on a device) or injected now.

File format (TOML `[[fault]]` tables, or JSON `{"faults": [...]}`), one entry per fault:

    kind        device_lost | hang | link_down | link_degraded | straggler |
                memory_error | thermal_throttle
    device      the device it hits (all kinds but link_*)
    link        [a, b]: the route between devices a and b, both directions (link_* kinds)
    at_us       when it starts, simulated microseconds (default: now / 0)
    after_ops   or: when the device has been issued this many ops
    duration_us how long it lasts (default: forever; ignored for device_lost, hang)
    factor      straggler: k x slower, in [1, 1000]; thermal_throttle: clock fraction,
                link_degraded: bandwidth fraction, both in [0.001, 1]
    buffer      memory_error: the buffer id hit (default: a live buffer on the device,
                chosen by the simulator's seeded random generator)
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpt.sim._errors import InvalidRequestError

FAULT_KINDS = (
    "device_lost",
    "hang",
    "link_down",
    "link_degraded",
    "straggler",
    "memory_error",
    "thermal_throttle",
)
LINK_KINDS = ("link_down", "link_degraded")
US = 1e-6
_FIELDS = {"kind", "device", "link", "at_us", "after_ops", "duration_us", "factor", "buffer"}
# Bounds that keep one fault from breaking the shared clock: a straggler at most this many times
# slower, a throttle or degraded link at least this fraction of full speed.
MAX_SLOWDOWN = 1000.0
MIN_FRACTION = 1.0 / MAX_SLOWDOWN


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Fault:
    kind: str
    device: int | None = None
    link: tuple[int, int] | None = None
    at: float | None = None  # seconds; None: when injected (or after_ops)
    after_ops: int | None = None
    duration: float = math.inf
    factor: float = 1.0
    buffer: int | None = None

    def __post_init__(self) -> None:
        what = f"fault {self.kind!r}"
        if self.kind not in FAULT_KINDS:
            raise InvalidRequestError(
                f"fault kind {self.kind!r} unknown; use one of {', '.join(FAULT_KINDS)}"
            )
        if self.kind in LINK_KINDS:
            link = self.link
            if link is None or len(link) != 2 or not all(_is_int(d) and d >= 0 for d in link):
                raise InvalidRequestError(f"{what}: 'link' = {link!r} must be [a, b] devices")
        elif not _is_int(self.device) or self.device < 0:
            raise InvalidRequestError(f"{what}: 'device' = {self.device!r} must be a device index")
        if self.at is not None and self.after_ops is not None:
            raise InvalidRequestError(f"{what}: give 'at_us' or 'after_ops', not both")
        if self.at is not None and (not math.isfinite(self.at) or self.at < 0):
            raise InvalidRequestError(f"{what}: 'at_us' = {self.at / US!r} must be >= 0")
        if self.after_ops is not None and (
            not _is_int(self.after_ops) or self.after_ops < 0 or self.kind in LINK_KINDS
        ):
            raise InvalidRequestError(
                f"{what}: 'after_ops' = {self.after_ops!r} must be >= 0 and on a device fault"
            )
        if not self.duration > 0:  # inf (forever) is fine; NaN is not
            raise InvalidRequestError(f"{what}: 'duration_us' must be > 0")
        if self.buffer is not None and not _is_int(self.buffer):
            raise InvalidRequestError(f"{what}: 'buffer' = {self.buffer!r} must be a buffer id")
        if self.kind == "straggler" and not 1 <= self.factor <= MAX_SLOWDOWN:
            raise InvalidRequestError(
                f"{what}: 'factor' = {self.factor!r} must be in [1, {MAX_SLOWDOWN:g}] (k x slower)"
            )
        if self.kind in ("thermal_throttle", "link_degraded") and not (
            MIN_FRACTION <= self.factor <= 1
        ):
            raise InvalidRequestError(
                f"{what}: 'factor' = {self.factor!r} must be in [{MIN_FRACTION:g}, 1] "
                "(the fraction of full speed left)"
            )

    @classmethod
    def from_dict(cls, entry: dict[str, Any], where: str = "fault") -> Fault:
        if not isinstance(entry, dict):
            raise InvalidRequestError(f"{where}: {entry!r} must be a table/object")
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise InvalidRequestError(
                f"{where}: unknown field(s) {unknown}; known: {sorted(_FIELDS)}"
            )
        if "kind" not in entry:
            raise InvalidRequestError(f"{where}: missing field 'kind'")
        try:
            return cls(
                kind=entry["kind"],
                device=entry.get("device"),
                link=tuple(entry["link"]) if "link" in entry else None,
                at=entry["at_us"] * US if "at_us" in entry else None,
                after_ops=entry.get("after_ops"),
                duration=entry.get("duration_us", math.inf) * US,
                factor=float(entry.get("factor", 1.0)),
                buffer=entry.get("buffer"),
            )
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"{where}: bad value: {exc}") from None


def load_faults(source: str | Path | list | dict) -> list[Fault]:
    """Faults from a .toml/.json file, or from already-parsed entries; validated."""
    name = "<faults>"
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidRequestError(f"fault file {str(path)!r} does not exist")
        name, text = str(path), path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise InvalidRequestError(f"fault file {name}: cannot parse: {exc}") from None
    else:
        data = source
    if isinstance(data, dict):
        entries = data.get("fault", data.get("faults", []))
    else:
        entries = data
    if not isinstance(entries, list):
        raise InvalidRequestError(f"{name}: expected a list of faults under 'fault' or 'faults'")
    return [
        e if isinstance(e, Fault) else Fault.from_dict(e, f"{name} fault #{i}")
        for i, e in enumerate(entries)
    ]
