"""Chip profiles: TOML files validated on load into frozen dataclasses (schema in README)."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from kpt.sim._errors import InvalidRequestError
from kpt.sim._host_model import HostCosts
from kpt.sim._profile_launch import (
    LAYERS_IN_SERIES,
    RNN_FIELDS,
    FusedRnn,
    launch_and_host_fields,
)

DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")
UNITS = ("matrix", "vector")
SCHEMA_VERSION = 1
TERA = 1e12
GIGA = 1e9
GIB = 1 << 30
MIB = 1 << 20
MAX_BYTES = (1 << 63) - 1  # a memory size must fit a signed 64-bit integer
US = 1e-6


# Op classes that take their efficiency from a broader class when a profile has no table of
# their own (then from "default").
CLASS_PARENTS = {
    "softmax": "norm", "layernorm": "norm", "rmsnorm": "norm", "matmul_int8w": "matmul",
    "multi_tensor": "elementwise", "batchnorm": "norm",
}  # fmt: skip


@dataclass(frozen=True)
class Efficiency:
    """Achieved fraction of peak: eff(x) = e_max * x / (x + x_half); tile pads matrix dims.

    The other fields are optional refinements (0 or empty: off); the README's schema says
    which op class reads which, and the shape convention each needs.
    """

    compute_e_max: float
    compute_x_half: float
    memory_e_max: float
    memory_x_half: float
    tile: int = 1
    # Per-dtype fixed seconds on top of the kernel launch (e.g. fp32 GEMM set-up).
    fixed_s: dict[str, float] = field(default_factory=dict, hash=False)
    # Matrix rate (FLOP/s) a tensor-core op falls to when a row is not 16-byte aligned: rows of
    # an odd number of elements (cuBLAS's align-1 kernels); the same when the odd row is the
    # output's (0: misaligned_flops); rows of 2 or more elements' alignment (align-2/4
    # kernels; 0: misaligned_flops); and the output tile (rows and columns) those kernels pad
    # M and N to (0: the class's tile).
    misaligned_flops: float = 0.0
    misaligned_output_flops: float = 0.0
    align2_flops: float = 0.0
    misaligned_tile: int = 0
    # GEMMs with at most skinny_rows rows or columns (a serving engine's decode-time products):
    # cuBLAS runs gemv and split-K kernels that stream the weight on their own memory curve,
    # skinny_memory_e_max and skinny_memory_x_half (bytes); 0: the class's curve.
    skinny_rows: int = 0
    skinny_memory_e_max: float = 0.0
    skinny_memory_x_half: float = 0.0
    # Misaligned rows at most kpt.sim._cost.GEMV_ROWS rows: cuBLAS's gemv kernels stream them
    # on the skinny curve at this fraction of its bandwidth (0: the fallback kernels' rates).
    misaligned_gemv_factor: float = 0.0
    # Row-wise ops: memory efficiency factor when a row is not 16-byte aligned (scalar loads).
    misaligned_memory_factor: float = 1.0
    # Wave quantization: per dtype, the (rows, cols) output tile of one thread block; a GEMM
    # whose tiles fill w waves of compute_units blocks runs at w / ceil(w).
    wave_tile: dict[str, tuple[int, int]] = field(default_factory=dict, hash=False)
    # Convolutions: input channels padded to a multiple of this (implicit GEMM's K).
    channel_align: int = 1
    # Attention: softmax score elements per second (the exponential unit's rate).
    score_rate: float = 0.0
    # Attention: each block's fixed start and finish, in key tiles of work, which a causal
    # mask never saves (kpt.sim._flash_schedule); 0: none.
    block_tiles: float = 0.0
    # Row-wise ops (norms): rows per second, a per-row cost added to the roofline.
    row_rate: float = 0.0
    # Reductions, launched as torch's reduction kernel splits them (kpt.sim._reduce_plan):
    # seconds a thread waits for one round of its loads (memory latency under load), a
    # block's own start and finish, a grid-wide pass's fixed cost and each partial result
    # its last block reads in sequence. load_round_s 0: a roofline only.
    load_round_s: float = 0.0
    block_s: float = 0.0
    second_pass_s: float = 0.0
    tail_load_s: float = 0.0
    # Reductions that do not sum (shape's summing flag 0: amax, max, var...) over 16-bit
    # inputs: their rounds of loads take this many times a sum's.
    compare_round_factor: float = 1.0
    # Row-wise ops: bytes/s one row's block streams (of fp32 rows; 16-bit rows stream the same
    # elements/s, half the bytes); rows fewer than the SMs cannot reach HBM bandwidth. Batch
    # norm in NCHW: the same, of one channel's block (kpt.sim._batch_norm_cost), each wave of
    # blocks paying block_s.
    row_stream_rate: float = 0.0
    # Grouped (depthwise) convolutions: FLOP/s of the direct kernel they run (no GEMM tiles)
    # and output elements/s (0: no per-output cost); cuDNN's channels-last kernel, and
    # PyTorch's own for NCHW (nchw_*; 0: the channels-last figures for both layouts).
    grouped_flops: float = 0.0
    grouped_output_rate: float = 0.0
    nchw_grouped_flops: float = 0.0
    nchw_grouped_output_rate: float = 0.0
    # Convolutions in NCHW (shape's layout flag 0) with a window larger than 1x1: extra passes
    # over the op's bytes (cuDNN's tensor-core kernels transpose to NHWC and back).
    nchw_passes: float = 0.0
    # Convolutions with a 1x1 window and one group (1: on): cuDNN runs them as the GEMM they
    # are, [N*H*W, Cin] x [Cin, Cout], so the matmul class prices them (its tiles, waves and
    # curves), not the implicit-GEMM curve of windowed convolutions.
    pointwise_gemm: int = 0
    # Row-wise ops: rows wider than this many bytes do not stay on chip between passes (max,
    # sum, write) and move wide_row_factor times the bytes; 0: every row stays.
    wide_row_bytes: float = 0.0
    wide_row_factor: float = 1.0
    # Softmax's third block kernel: the bytes moved per byte where the rows in flight (two
    # 1024-thread blocks per SM) fit the chip's cache, its passes re-reading them there
    # (wide_row_factor is then the rows read from HBM again); 0: wide_row_factor either way.
    cached_row_factor: float = 0.0
    # FLOP/s of this class's kernels whatever the storage dtype (softmax and norms compute in
    # fp32 for bf16 inputs too); 0: the unit's peak for the dtype.
    class_flops: float = 0.0
    # Row-wise ops: FLOP/s of rows of at most 1024 elements (kpt.sim._cost.SHORT_ROW_ELEMENTS:
    # softmax's warp kernel at <= 32 elements per lane); 0: class_flops for every row.
    short_row_flops: float = 0.0
    # Softmax: FLOP/s of rows torch's block kernel keeps in registers (kpt.sim._cost.
    # block_softmax_kernel "registers"); set, wide_row_factor applies to the rows its third
    # kernel reads from HBM again for each pass, not by wide_row_bytes; 0: class_flops.
    register_row_flops: float = 0.0
    # Softmax: bytes/s one row streams in the warp-per-row kernel (rows of <= 2048 elements and
    # <= 8 KiB, torch's persistent softmax); set, wider rows run one 1024-thread block per row
    # and at most one row per SM streams at row_stream_rate (the SM's throughput binds).
    warp_row_rate: float = 0.0
    # Multi-tensor (foreach, fused optimizer) kernels: bytes/s one thread block streams (of
    # fp32 elements; 16-bit ones stream the same elements/s); a launch of fewer blocks than
    # the chip holds cannot reach HBM bandwidth.
    block_stream_rate: float = 0.0
    # Attention: a backward's products in forwards' of the same shape (0: the FLOPs the
    # adapters name for it, kpt.sim._cost.ATTENTION_BACKWARD_WORK forwards). Batch norm in
    # NCHW: a backward's time per element of a channel in a forward's (0: the same).
    backward_work: float = 0.0
    # Attention: a backward's softmax work (recomputed scores and their gradients) in
    # forwards' (0: backward_work's).
    backward_score_work: float = 0.0
    # Per dtype, the class's table with that dtype's own fields ([efficiency.<class>.<dtype>]):
    # a dtype whose kernels are another family (fp32 attention runs the memory-efficient
    # kernel, not flash attention) has its own rates.
    by_dtype: dict[str, Efficiency] = field(default_factory=dict, hash=False)

    def for_dtype(self, dtype: str) -> Efficiency:
        return self.by_dtype.get(dtype, self)


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
    # Host seconds to issue one op (eager framework + driver launch); 0: the host is free.
    host_issue_s: float = 0.0
    # Host seconds per launch by source ([host] table, kpt.sim._host_model); None: host_issue_s.
    host: HostCosts | None = None
    # The part of kernel_launch_s that is latency before an idle device starts a kernel; a
    # kernel queued behind earlier work hides it and costs kernel_launch_s minus this.
    launch_latency_s: float = 0.0
    # What an eager stream's queued kernel pays beyond a CUDA graph's node (the GPU front end's
    # gap between kernels; kpt.sim._profile_launch): it hides launch_latency_s less this.
    stream_gap_s: float = 0.0
    # Fused RNN layers beyond their kernels: in-layer gaps, a stack's layers side by side.
    rnn: FusedRnn = LAYERS_IN_SERIES
    # Pageable (not pinned) host memory: staged through pinned bounce buffers, a slower
    # alpha-beta link of its own. 0: the profile does not say (the pinned link is used).
    pageable_bandwidth: float = 0.0
    pageable_latency_s: float = 0.0
    # The vendor's HBM figure (bytes/s) beside the achieved hbm_bandwidth: `kpt-sim profile
    # derive` scales the achieved rate by the ratio of two datasheets. 0: not given.
    hbm_datasheet_bandwidth: float = 0.0
    # The calibrated profile this one was derived from with a datasheet ("": measured itself).
    derived_from: str = ""
    # Per op class: (low, high) factors on a prediction that held 80% of the calibration's
    # measured/predicted ratios (10th and 90th percentiles); kpt.sim.interval reads them.
    uncertainty: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)

    @property
    def queued_latency_s(self) -> float:
        """The latency a kernel queued behind another on an eager stream hides."""
        return self.launch_latency_s - self.stream_gap_s

    def kernels_only(self) -> Profile:
        """This chip without what runs between or beside its kernels (an eager stream's gap,
        [rnn]'s gap, stack and directions): its kernels back to back, as a profiler's kernel
        sum times them. A new object: cost caches are per profile, so keep the one you use."""
        return dataclasses.replace(self, stream_gap_s=0.0, rnn=self.rnn.kernels_only())

    def efficiency_for(self, op_class: str) -> Efficiency:
        """The class's own table, else its parent's (softmax -> norm), else "default"."""
        found = self.efficiency.get(op_class)
        if found is None and op_class in CLASS_PARENTS:
            found = self.efficiency.get(CLASS_PARENTS[op_class])
        return found or self.efficiency["default"]

    def summary(self) -> dict[str, Any]:
        """A flat dict for `devices()` answers and `kpt-sim profiles`."""
        # Only chips with float8 tensor cores name a float8 peak (kpt.hal reads it as "fp8").
        fp8 = self.peak_flops["matrix"].get("fp8")
        return {
            "profile": self.name,
            "vendor": self.vendor,
            "model": self.model,
            "calibrated": self.calibrated,
            "compute_units": self.compute_units,
            "memory_total": self.hbm_bytes,
            "hbm_bandwidth": self.hbm_bandwidth,
            "peak_bf16_matrix_flops": self.peak_flops["matrix"]["bf16"],
            **({"peak_fp8_matrix_flops": fp8} if fp8 else {}),
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
        try:
            text_of_file = path.read_text()
        except UnicodeDecodeError as exc:
            raise InvalidRequestError(
                f"profile file {text!r} is not a text (TOML) file: byte {exc.start} is "
                f"{exc.object[exc.start : exc.start + 1]!r}; pass a .toml profile"
            ) from None
        return _load_cached(path.stem, text_of_file, str(path))
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

    _refuse_unknown_fields(data, where)
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
    for op_class, table in eff_table.items():
        efficiency[op_class] = _efficiency(f"efficiency.{op_class}", table, get, where)

    def positive(path: str, kind=(int, float)):
        value = get(path, kind)
        if value <= 0:
            raise InvalidRequestError(f"{where}: field {path!r} = {value!r} must be > 0")
        return value

    def byte_size(path: str, scale: int, kind=(int, float)) -> int:
        # Sizes travel as 64-bit integers (the daemon's replies, torch's memory counters).
        value = positive(path, kind) if path.startswith("hbm.") else get(path, kind)
        if value * scale > MAX_BYTES:
            raise InvalidRequestError(
                f"{where}: field {path!r} = {value!r} is too large: at most "
                f"{MAX_BYTES // scale} (sizes must fit in 64 bits)"
            )
        return int(value * scale)

    return Profile(
        name=name,
        vendor=get("vendor", str, None),
        model=get("model", str, None),
        calibrated=get("calibrated", bool, None),
        compute_units=positive("compute_units", int),
        power_w=float(get("power_w")),
        cache_bytes=byte_size("cache_mib", MIB),
        kernel_launch_s=float(get("kernel_launch_us")) * US,
        peak_flops=peak,
        hbm_bytes=byte_size("hbm.capacity_gib", GIB),
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
        **launch_and_host_fields(data, get, where),
        **_provenance(data, get, where),
    )


def _provenance(data: dict[str, Any], get, where: str) -> dict[str, Any]:
    """Optional derived_from, hbm.datasheet_bandwidth_gbps and [uncertainty] (class = [lo, hi])."""
    out: dict[str, Any] = {}
    if "derived_from" in data:
        out["derived_from"] = get("derived_from", str, None)
    if "datasheet_bandwidth_gbps" in data.get("hbm", {}):
        out["hbm_datasheet_bandwidth"] = float(get("hbm.datasheet_bandwidth_gbps")) * GIGA
    bands = {}
    for op_class, band in get("uncertainty", dict, None).items() if "uncertainty" in data else ():
        ok = isinstance(band, list) and len(band) == 2
        ok = ok and all(isinstance(b, int | float) and not isinstance(b, bool) for b in band)
        if not ok or not 0 < band[0] <= 1 <= band[1] < math.inf:
            raise InvalidRequestError(
                f"{where}: field 'uncertainty.{op_class}' = {band!r} must be [low, high] with "
                "0 < low <= 1 <= high (factors on a prediction)"
            )
        bands[op_class] = (float(band[0]), float(band[1]))
    if bands:
        out["uncertainty"] = bands
    return out


# Fields of schema 1 outside [efficiency] (whose tables are checked one by one).
PROFILE_FIELDS: dict[str, set[str] | None] = {
    "schema": None, "vendor": None, "model": None, "calibrated": None, "compute_units": None,
    "power_w": None, "cache_mib": None, "kernel_launch_us": None, "efficiency": None,
    "kernel_back_to_back_us": None, "kernel_queued_us": None, "host_issue_us": None,
    "derived_from": None, "rnn": RNN_FIELDS,
    "uncertainty": None, "host": None,
    "peak_tflops": set(UNITS),
    "hbm": {"capacity_gib", "bandwidth_gbps", "datasheet_bandwidth_gbps"},
    "host_link": {"bandwidth_gbps", "latency_us", "pageable_bandwidth_gbps",
                  "pageable_latency_us"}, "dma": {"engines"},
    "chip_links": {"count", "bandwidth_gbps", "latency_us"},
    "network": {"bandwidth_gbps", "latency_us"},
}  # fmt: skip


def _refuse_unknown_fields(data: dict[str, Any], where: str) -> None:
    """A misspelled field would silently keep a default: refuse it by name."""
    unknown = sorted(set(data) - set(PROFILE_FIELDS))
    for table, known in PROFILE_FIELDS.items():
        if known is not None and isinstance(data.get(table), dict):
            unknown += sorted(f"{table}.{k}" for k in set(data[table]) - known)
    if unknown:
        raise InvalidRequestError(
            f"{where}: unknown field(s) {unknown}; see the schema in the kpt-sim README"
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


# Optional efficiency fields: TOML key -> (Efficiency field, scale to SI units, integer?).
OPTIONAL_EFFICIENCY = {
    "tile": ("tile", 1, True),
    "misaligned_tflops": ("misaligned_flops", TERA, False),
    "misaligned_output_tflops": ("misaligned_output_flops", TERA, False),
    "align2_tflops": ("align2_flops", TERA, False),
    "misaligned_tile": ("misaligned_tile", 1, True),
    "misaligned_memory_factor": ("misaligned_memory_factor", 1, False),
    "skinny_rows": ("skinny_rows", 1, True),
    "skinny_memory_e_max": ("skinny_memory_e_max", 1, False),
    "skinny_memory_x_half": ("skinny_memory_x_half", 1, False),
    "misaligned_gemv_factor": ("misaligned_gemv_factor", 1, False),
    "channel_align": ("channel_align", 1, True),
    "score_gps": ("score_rate", GIGA, False),
    "block_tiles": ("block_tiles", 1, False),
    "row_gps": ("row_rate", GIGA, False),
    "load_round_us": ("load_round_s", US, False),
    "block_us": ("block_s", US, False),
    "second_pass_us": ("second_pass_s", US, False),
    "tail_load_us": ("tail_load_s", US, False),
    "compare_round_factor": ("compare_round_factor", 1, False),
    "row_stream_gbps": ("row_stream_rate", GIGA, False),
    "grouped_tflops": ("grouped_flops", TERA, False),
    "grouped_output_gps": ("grouped_output_rate", GIGA, False),
    "nchw_grouped_tflops": ("nchw_grouped_flops", TERA, False),
    "nchw_grouped_output_gps": ("nchw_grouped_output_rate", GIGA, False),
    "nchw_passes": ("nchw_passes", 1, False),
    "pointwise_gemm": ("pointwise_gemm", 1, True),
    "wide_row_bytes": ("wide_row_bytes", 1, False),
    "wide_row_factor": ("wide_row_factor", 1, False),
    "cached_row_factor": ("cached_row_factor", 1, False),
    "class_tflops": ("class_flops", TERA, False),
    "short_row_tflops": ("short_row_flops", TERA, False),
    "register_row_tflops": ("register_row_flops", TERA, False),
    "warp_row_gbps": ("warp_row_rate", GIGA, False),
    "block_stream_gbps": ("block_stream_rate", GIGA, False),
    "backward_work": ("backward_work", 1, False),
    "backward_score_work": ("backward_score_work", 1, False),
}
EFFICIENCY_KEYS = {"compute_e_max", "compute_x_half", "memory_e_max", "memory_x_half",
                   "fixed_us", "wave_tile", *OPTIONAL_EFFICIENCY}  # fmt: skip


def _efficiency(p: str, table: Any, get, where: str) -> Efficiency:
    """One [efficiency.<class>] table; optional refinements default to off."""
    if not isinstance(table, dict):
        raise InvalidRequestError(f"{where}: field {p!r} = {table!r} must be a table")
    dtype_tables = {d: table[d] for d in DTYPES if isinstance(table.get(d), dict)}
    unknown = sorted(set(table) - EFFICIENCY_KEYS - set(dtype_tables))
    if unknown:
        raise InvalidRequestError(
            f"{where}: {p} has unknown field(s) {unknown}; known: {sorted(EFFICIENCY_KEYS)} "
            f"and per-dtype tables ({', '.join(DTYPES)})"
        )
    extra: dict[str, Any] = {}
    for key, (name, scale, integer) in OPTIONAL_EFFICIENCY.items():
        if key in table:
            value = get(f"{p}.{key}", int if integer else (int, float), 1 if integer else 0)
            extra[name] = int(value) if integer else float(value) * scale
    if "fixed_us" in table:
        fixed = get(f"{p}.fixed_us", dict, None)
        unknown = sorted(set(fixed) - set(DTYPES))
        if unknown:
            raise InvalidRequestError(
                f"{where}: {p}.fixed_us has unknown dtype(s) {unknown}; known: {list(DTYPES)}"
            )
        extra["fixed_s"] = {d: float(get(f"{p}.fixed_us.{d}")) * US for d in fixed}
    if "wave_tile" in table:
        tiles = get(f"{p}.wave_tile", dict, None)
        for d, tile in tiles.items():
            ok = isinstance(tile, list) and len(tile) == 2
            if d not in DTYPES or not ok or not all(type(t) is int and t > 0 for t in tile):
                raise InvalidRequestError(
                    f"{where}: {p}.wave_tile.{d} = {tile!r} must be [rows, cols] (positive "
                    f"integers) under a known dtype {list(DTYPES)}"
                )
        extra["wave_tile"] = {d: (t[0], t[1]) for d, t in tiles.items()}
    eff = Efficiency(
        compute_e_max=float(get(f"{p}.compute_e_max")),
        compute_x_half=float(get(f"{p}.compute_x_half")),
        memory_e_max=float(get(f"{p}.memory_e_max")),
        memory_x_half=float(get(f"{p}.memory_x_half")),
        **extra,
    )
    for fld in ("compute_e_max", "memory_e_max", "misaligned_memory_factor"):
        value = getattr(eff, fld)
        if not 0 < value <= 1:
            raise InvalidRequestError(f"{where}: field '{p}.{fld}' = {value!r} must be in (0, 1]")
    if eff.skinny_rows and not 0 < eff.skinny_memory_e_max <= 1:
        raise InvalidRequestError(
            f"{where}: {p}.skinny_rows = {eff.skinny_rows} needs {p}.skinny_memory_e_max in "
            "(0, 1] (the memory curve of the skinny regime)"
        )
    if dtype_tables:
        for d, own in dtype_tables.items():
            if any(isinstance(own.get(x), dict) for x in DTYPES):
                raise InvalidRequestError(f"{where}: {p}.{d} holds a dtype table; one level only")
        shared = {k: v for k, v in table.items() if k not in dtype_tables}
        by_dtype = {
            d: _efficiency(f"{p}.{d}", {**shared, **own}, _falling_back(get, p, d, own), where)
            for d, own in dtype_tables.items()
        }
        eff = dataclasses.replace(eff, by_dtype=by_dtype)
    return eff


def _falling_back(get, p: str, dtype: str, own: dict):
    """`get` for the dtype table `p.dtype`: its own fields, the class's (`p`) for the rest."""
    head = f"{p}.{dtype}."

    def lookup(path: str, *args: Any, **kwargs: Any) -> Any:
        if path.startswith(head) and path[len(head) :].split(".")[0] not in own:
            path = f"{p}.{path[len(head) :]}"
        return get(path, *args, **kwargs)

    return lookup
