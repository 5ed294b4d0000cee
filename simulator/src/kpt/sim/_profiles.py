"""Chip profiles: TOML files validated on load into frozen dataclasses (schema in README)."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from kpt.sim._errors import InvalidRequestError

DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")
UNITS = ("matrix", "vector")
SCHEMA_VERSION = 1
TERA = 1e12
GIGA = 1e9
GIB = 1 << 30
MIB = 1 << 20
US = 1e-6


@dataclass(frozen=True)
class Efficiency:
    """Achieved fraction of peak: eff(x) = e_max * x / (x + x_half); tile pads matrix dims."""

    compute_e_max: float
    compute_x_half: float
    memory_e_max: float
    memory_x_half: float
    tile: int = 1


@dataclass(frozen=True, eq=False)  # hashed by identity: cost tables are cached per profile
class Profile:
    """One chip. Rates are in SI units: FLOP/s, bytes/s, seconds, bytes."""

    name: str
    vendor: str
    model: str
    calibrated: bool
    compute_units: int
    power_w: float
    cache_bytes: int
    kernel_launch_s: float
    peak_flops: dict[str, dict[str, float]]  # unit -> dtype -> FLOP/s (0: unsupported)
    hbm_bytes: int
    hbm_bandwidth: float
    host_link_bandwidth: float
    host_link_latency_s: float
    dma_engines: int
    chip_link_count: int
    chip_link_bandwidth: float
    chip_link_latency_s: float
    network_bandwidth: float
    network_latency_s: float
    efficiency: dict[str, Efficiency] = field(repr=False)
    source: str = ""

    def efficiency_for(self, op_class: str) -> Efficiency:
        return self.efficiency.get(op_class) or self.efficiency["default"]

    def summary(self) -> dict[str, Any]:
        """A flat dict for `devices()` answers and `kpt-sim profiles`."""
        return {
            "profile": self.name,
            "vendor": self.vendor,
            "model": self.model,
            "calibrated": self.calibrated,
            "compute_units": self.compute_units,
            "memory_total": self.hbm_bytes,
            "hbm_bandwidth": self.hbm_bandwidth,
            "peak_bf16_matrix_flops": self.peak_flops["matrix"]["bf16"],
            "peak_fp32_vector_flops": self.peak_flops["vector"]["fp32"],
            "chip_link_bandwidth": self.chip_link_count * self.chip_link_bandwidth,
            "host_link_bandwidth": self.host_link_bandwidth,
            "power_w": self.power_w,
        }


def _profiles_dir():
    return resources.files("kpt.sim") / "profiles"


@cache
def profiles() -> list[str]:
    """Names of the shipped chip profiles, sorted."""
    return sorted(
        p.name.removesuffix(".toml") for p in _profiles_dir().iterdir() if p.name.endswith(".toml")
    )


def load_profile(name_or_path: str | Path | Profile) -> Profile:
    """A shipped profile by name ("h100-sxm"), or a TOML file by path; validated."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or isinstance(name_or_path, Path):
        path = Path(text)
        if not path.is_file():
            raise InvalidRequestError(f"profile file {text!r} does not exist")
        return _load_cached(path.stem, path.read_text(), str(path))
    if text not in profiles():
        raise InvalidRequestError(
            f"profile {text!r} not found; shipped profiles: {', '.join(profiles())} "
            "(or pass the path of a .toml profile)"
        )
    source = f"kpt.sim/profiles/{text}.toml"
    return _load_cached(text, (_profiles_dir() / f"{text}.toml").read_text(), source)


@cache
def _load_cached(name: str, text: str, source: str) -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequestError(f"profile {source}: not valid TOML: {exc}") from None
    return profile_from_dict(name, data, source)


def profile_from_dict(name: str, data: dict[str, Any], source: str = "<dict>") -> Profile:
    """Validate a parsed profile; every error names the field, the bad value and the file."""
    where = f"profile {name!r} ({source})"

    def get(path: str, kind: type | tuple[type, ...] = (int, float), minimum: float | None = 0):
        node: Any = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise InvalidRequestError(
                    f"{where}: missing field {path!r}; see the schema in the kpt-sim README"
                )
            node = node[part]
        if kind in ((int, float), int, float) and isinstance(node, bool):
            raise InvalidRequestError(f"{where}: field {path!r} = {node!r} must be a number")
        if not isinstance(node, kind):
            want = kind.__name__ if isinstance(kind, type) else "a number"
            raise InvalidRequestError(f"{where}: field {path!r} = {node!r} must be {want}")
        numeric = minimum is not None and isinstance(node, int | float)
        if numeric and (not math.isfinite(node) or node < minimum):
            raise InvalidRequestError(
                f"{where}: field {path!r} = {node!r} must be finite and >= {minimum}"
            )
        return node

    schema = get("schema", int)
    if schema != SCHEMA_VERSION:
        raise InvalidRequestError(
            f"{where}: field 'schema' = {schema!r}; this kpt-sim reads schema {SCHEMA_VERSION}"
        )
    peak: dict[str, dict[str, float]] = {}
    for unit in UNITS:
        table = get(f"peak_tflops.{unit}", dict, None)
        unknown = sorted(set(table) - set(DTYPES))
        if unknown:
            raise InvalidRequestError(
                f"{where}: peak_tflops.{unit} has unknown dtype(s) {unknown}; known: {list(DTYPES)}"
            )
        peak[unit] = {d: float(get(f"peak_tflops.{unit}.{d}")) * TERA for d in DTYPES}
    efficiency = {}
    eff_table = get("efficiency", dict, None)
    if "default" not in eff_table:
        raise InvalidRequestError(
            f"{where}: missing field 'efficiency.default' (used for op classes without their own)"
        )
    for op_class in eff_table:
        p = f"efficiency.{op_class}"
        eff = Efficiency(
            compute_e_max=float(get(f"{p}.compute_e_max")),
            compute_x_half=float(get(f"{p}.compute_x_half")),
            memory_e_max=float(get(f"{p}.memory_e_max")),
            memory_x_half=float(get(f"{p}.memory_x_half")),
            tile=int(get(f"{p}.tile", int, 1)) if "tile" in eff_table[op_class] else 1,
        )
        for fld in ("compute_e_max", "memory_e_max"):
            value = getattr(eff, fld)
            if not 0 < value <= 1:
                raise InvalidRequestError(
                    f"{where}: field '{p}.{fld}' = {value!r} must be in (0, 1]"
                )
        efficiency[op_class] = eff

    def positive(path: str, kind=(int, float)):
        value = get(path, kind)
        if value <= 0:
            raise InvalidRequestError(f"{where}: field {path!r} = {value!r} must be > 0")
        return value

    return Profile(
        name=name,
        vendor=get("vendor", str, None),
        model=get("model", str, None),
        calibrated=get("calibrated", bool, None),
        compute_units=positive("compute_units", int),
        power_w=float(get("power_w")),
        cache_bytes=int(get("cache_mib") * MIB),
        kernel_launch_s=float(get("kernel_launch_us")) * US,
        peak_flops=peak,
        hbm_bytes=int(positive("hbm.capacity_gib") * GIB),
        hbm_bandwidth=float(positive("hbm.bandwidth_gbps")) * GIGA,
        host_link_bandwidth=float(positive("host_link.bandwidth_gbps")) * GIGA,
        host_link_latency_s=float(get("host_link.latency_us")) * US,
        dma_engines=positive("dma.engines", int),
        chip_link_count=positive("chip_links.count", int),
        chip_link_bandwidth=float(positive("chip_links.bandwidth_gbps")) * GIGA,
        chip_link_latency_s=float(get("chip_links.latency_us")) * US,
        network_bandwidth=float(positive("network.bandwidth_gbps")) * GIGA,
        network_latency_s=float(get("network.latency_us")) * US,
        efficiency=efficiency,
        source=source,
    )


def profile_table() -> list[dict[str, Any]]:
    """One row per shipped profile, for `kpt-sim profiles`."""
    return [load_profile(name).summary() for name in profiles()]


def parse_profile_spec(spec: str) -> list[str]:
    """'h100-sxm:2,mi300x:2' -> one profile name per device, in order."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition(":")
        if count and (not count.isdigit() or int(count) < 1):
            raise InvalidRequestError(
                f"profile spec {spec!r}: count {count!r} for {name!r} must be a positive integer"
            )
        load_profile(name)
        names.extend([name] * (int(count) if count else 1))
    if not names:
        raise InvalidRequestError(
            f"profile spec {spec!r} names no profile; e.g. 'h100-sxm' or 'h100-sxm:2,mi300x:2'"
        )
    return names
