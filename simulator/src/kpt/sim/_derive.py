"""`kpt-sim profile derive`: a profile for a chip nobody calibrated, from one that was.

The method (the `h200` profile is its output, validated in calibration/REPORT.md): keep every
fitted efficiency of the calibrated base and change only what a datasheet states. HBM:
the achieved bandwidth scales by the ratio of the two datasheet figures (the base's
`hbm.datasheet_bandwidth_gbps`), and each class's memory start-up keeps its seconds (its
x_half in bytes scales with the bandwidth). Compute: `compute_scale` (clock x units against
the base) scales every peak and every fitted TFLOP/s figure. Links and capacity are set as
given. The base's comments stay, so the file still says where each number came from.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kpt.sim._errors import InvalidRequestError
from kpt.sim._profiles import DTYPES, load_profile, profile_from_dict

TFLOPS_KEYS = ("misaligned_tflops", "misaligned_output_tflops", "align2_tflops", "grouped_tflops",
               "class_tflops")  # fmt: skip
HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")


@dataclass(frozen=True)
class Datasheet:
    """What a vendor's datasheet says about the new chip; None keeps the base's figure."""

    hbm_bandwidth_gbps: float
    hbm_capacity_gib: float | None = None
    compute_scale: float = 1.0
    compute_units: int | None = None
    chip_link_bandwidth_gbps: float | None = None  # per link, per direction
    host_link_bandwidth_gbps: float | None = None  # per direction
    vendor: str | None = None
    model: str | None = None
    base_hbm_datasheet_gbps: float | None = None  # when the base profile does not say
    # the new host's time per launch over the base's: every host figure scales by it (the
    # same GPU on a slower host, or the base's host figures for another machine)
    host_scale: float = 1.0


def _base_text(base: str) -> tuple[str, str]:
    """(profile name, TOML text) of a shipped profile or a .toml path."""
    load_profile(base)  # validates, and names the shipped profiles when misspelled
    if base.endswith(".toml") or "/" in base:
        return Path(base).stem, Path(base).read_text()
    return base, (resources.files("kpt.sim") / "profiles" / f"{base}.toml").read_text()


class _TomlLines:
    """Edits values in place, so the base's comments and layout survive."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def _section(self, section: str) -> tuple[int, int]:
        starts = [i for i, line in enumerate(self.lines) if HEADER.match(line)]
        if not section:
            return 0, starts[0] if starts else len(self.lines)
        for n, i in enumerate(starts):
            if HEADER.match(self.lines[i]).group(1).strip() == section:
                return i + 1, starts[n + 1] if n + 1 < len(starts) else len(self.lines)
        self.lines += ["", f"[{section}]"]
        return len(self.lines), len(self.lines)

    def set(self, section: str, key: str, value: str) -> None:
        start, end = self._section(section)
        pattern = re.compile(rf"^(\s*{re.escape(key)}\s*=\s*)([^#]*?)(\s*(#.*)?)$")
        for i in range(start, end):
            found = pattern.match(self.lines[i])
            if found:
                self.lines[i] = f"{found.group(1)}{value}{found.group(3) or ''}"
                return
        while end > start and not self.lines[end - 1].strip():
            end -= 1
        self.lines.insert(end, f"{key} = {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _number(x: float) -> str:
    return f"{x:.6g}"


def derive_profile(base: str, sheet: Datasheet) -> str:
    """The new profile's TOML text (validated before it is returned)."""
    base_name, text = _base_text(base)
    data = tomllib.loads(text)
    base_sheet = data.get("hbm", {}).get("datasheet_bandwidth_gbps", sheet.base_hbm_datasheet_gbps)
    if not base_sheet:
        raise InvalidRequestError(
            f"profile {base_name!r} has no hbm.datasheet_bandwidth_gbps: pass "
            "--base-hbm-datasheet GBPS (the base chip's datasheet HBM bandwidth)"
        )
    if not sheet.hbm_bandwidth_gbps > 0 or not sheet.compute_scale > 0 or not sheet.host_scale > 0:
        raise InvalidRequestError(
            f"hbm bandwidth {sheet.hbm_bandwidth_gbps!r} GB/s, compute scale "
            f"{sheet.compute_scale!r} and host scale {sheet.host_scale!r} must be > 0"
        )
    ratio = sheet.hbm_bandwidth_gbps / base_sheet
    out = _TomlLines(text)
    out.set("", "calibrated", "false")
    out.set("", "derived_from", f'"{base_name}"')
    for key, value in (("vendor", sheet.vendor), ("model", sheet.model)):
        if value is not None:
            out.set("", key, f'"{value}"')
    if sheet.compute_units is not None:
        out.set("", "compute_units", str(int(sheet.compute_units)))
    out.set("hbm", "bandwidth_gbps", _number(data["hbm"]["bandwidth_gbps"] * ratio))
    out.set("hbm", "datasheet_bandwidth_gbps", _number(sheet.hbm_bandwidth_gbps))
    if sheet.hbm_capacity_gib is not None:
        out.set("hbm", "capacity_gib", _number(sheet.hbm_capacity_gib))
    if sheet.chip_link_bandwidth_gbps is not None:
        out.set("chip_links", "bandwidth_gbps", _number(sheet.chip_link_bandwidth_gbps))
    if sheet.host_link_bandwidth_gbps is not None:
        out.set("host_link", "bandwidth_gbps", _number(sheet.host_link_bandwidth_gbps))
    for unit, table in data["peak_tflops"].items():
        for dtype, value in table.items():
            out.set(f"peak_tflops.{unit}", dtype, _number(value * sheet.compute_scale))
    for op_class, table in data["efficiency"].items():
        section = f"efficiency.{op_class}"
        # a dtype's own table ([efficiency.<class>.<dtype>]) scales as its class's does
        own = {d: table[d] for d in DTYPES if isinstance(table.get(d), dict)}
        for where, fields in [(section, table)] + [(f"{section}.{d}", t) for d, t in own.items()]:
            for key in ("memory_x_half", "skinny_memory_x_half"):  # bytes of start-up
                if key in fields:
                    out.set(where, key, _number(fields[key] * ratio))
            for key in TFLOPS_KEYS:
                if key in fields:
                    out.set(where, key, _number(fields[key] * sheet.compute_scale))
    if sheet.host_scale != 1.0:
        _scale_host(out, data, sheet.host_scale)
    host = f", host x{sheet.host_scale:g}" if sheet.host_scale != 1.0 else ""
    note = (
        f"# Derived with `kpt-sim profile derive --from {base_name}`: HBM x{ratio:.4g} "
        f"(datasheet {sheet.hbm_bandwidth_gbps:g} / {base_sheet:g} GB/s), compute "
        f"x{sheet.compute_scale:g}{host}; every efficiency is {base_name}'s calibration.\n"
    )
    derived = note + out.text()
    profile_from_dict("derived", tomllib.loads(derived), "kpt-sim profile derive")
    return derived


def _scale_host(out: _TomlLines, data: dict, scale: float) -> None:
    """Every host figure times `scale`: the one per launch and the [host] table's."""
    if "host_issue_us" in data:
        out.set("", "host_issue_us", _number(data["host_issue_us"] * scale))
    host = data.get("host", {})
    for key, value in host.items():
        if isinstance(value, dict):
            for name, figure in value.items():
                out.set(f"host.{key}", name, _number(figure * scale))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.set("host", key, _number(value * scale))


def write_derived(base: str, sheet: Datasheet, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != ".toml":
        raise InvalidRequestError(f"--out {str(path)!r} must end in .toml (a profile file)")
    path.write_text(derive_profile(base, sheet))
    return path


def add_profile_command(commands) -> None:
    """`kpt-sim profile derive ...` on the CLI's subparsers."""
    profile = commands.add_parser("profile", help="make chip profiles")
    actions = profile.add_subparsers(dest="profile_command", required=True)
    derive = actions.add_parser(
        "derive",
        help="a profile for a new chip: a calibrated one's efficiencies with your datasheet",
    )
    derive.add_argument("--from", dest="base", required=True, help="calibrated profile or .toml")
    derive.add_argument("--hbm-bandwidth", type=float, required=True, metavar="GBPS",
                        help="the new chip's datasheet HBM bandwidth, GB/s")  # fmt: skip
    derive.add_argument("--hbm-capacity", type=float, default=None, metavar="GIB",
                        help="the new chip's memory, GiB (default: the base's)")  # fmt: skip
    derive.add_argument(
        "--compute-scale", type=float, default=1.0,
        help="the new chip's dense peak over the base's (1: same compute)",
    )  # fmt: skip
    derive.add_argument("--compute-units", type=int, default=None,
                        help="SMs / CUs of the new chip (default: the base's)")  # fmt: skip
    derive.add_argument("--chip-link-bandwidth", type=float, default=None, metavar="GBPS",
                        help="per link and direction")  # fmt: skip
    derive.add_argument("--host-link-bandwidth", type=float, default=None, metavar="GBPS",
                        help="host link (PCIe) per direction (default: the base's)")  # fmt: skip
    derive.add_argument(
        "--base-hbm-datasheet", type=float, default=None, metavar="GBPS",
        help="the base chip's datasheet HBM bandwidth, if its profile lacks it",
    )  # fmt: skip
    derive.add_argument(
        "--host-scale", type=float, default=1.0,
        help="your host's time per launch over the base's (1.3: 30%% slower): scales every "
             "host figure; time an eager op loop on both machines to find it",
    )  # fmt: skip
    derive.add_argument("--vendor", default=None, help="vendor name (default: the base's)")
    derive.add_argument("--model", default=None, help="model name (default: the base's)")
    derive.add_argument("--out", required=True, help="the new profile, NAME.toml")


def run_profile_command(args) -> int:
    sheet = Datasheet(
        hbm_bandwidth_gbps=args.hbm_bandwidth,
        hbm_capacity_gib=args.hbm_capacity,
        compute_scale=args.compute_scale,
        compute_units=args.compute_units,
        chip_link_bandwidth_gbps=args.chip_link_bandwidth,
        host_link_bandwidth_gbps=args.host_link_bandwidth,
        vendor=args.vendor,
        model=args.model,
        base_hbm_datasheet_gbps=args.base_hbm_datasheet,
        host_scale=args.host_scale,
    )
    path = write_derived(args.base, sheet, args.out)
    derived = load_profile(str(path))
    print(
        f"wrote {path}: {derived.model}, HBM {derived.hbm_bandwidth / 1e9:.0f} GB/s achieved "
        f"of {derived.hbm_datasheet_bandwidth / 1e9:.0f} datasheet, "
        f"{derived.hbm_bytes / (1 << 30):.0f} GiB; efficiencies from {args.base}"
    )
    return 0
