"""Datasheet figures for known accelerators, reported as nominal Values.

Dense (no sparsity) peak rates, from the vendors' public datasheets. Matched against the
model name torch reports, most specific pattern first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kpt.hal._types import Link, Value

TERA = 1e12
GIGA = 1e9


@dataclass(frozen=True)
class NominalSpec:
    """One model's datasheet: peak TFLOP/s per dtype, memory TB/s, links, features."""

    model: str
    patterns: tuple[str, ...]  # lower-case substrings of the name torch reports
    tflops: dict[str, float]
    memory_tbps: float
    link_kind: str = ""
    link_gbps: float = 0.0  # per direction, all lanes of that link kind
    features: frozenset[str] = frozenset()
    dtypes: frozenset[str] = frozenset()

    def flops(self) -> dict[str, Value]:
        return {dtype: Value(rate * TERA, "FLOP/s") for dtype, rate in self.tflops.items()}

    def bandwidth(self) -> Value:
        return Value(self.memory_tbps * TERA, "B/s")

    def link(self) -> Link | None:
        if not self.link_kind:
            return None
        return Link(self.link_kind, Value(self.link_gbps * GIGA, "B/s"))


_FP8 = frozenset({"float8_e4m3fn", "float8_e5m2"})
_HOPPER = frozenset({"graphs", "fp8", "tf32"})

# Order matters: the first spec whose pattern appears in the model name wins.
NOMINAL_SPECS: tuple[NominalSpec, ...] = (
    NominalSpec(
        "B200",
        ("b200",),
        {"bfloat16": 2250, "float16": 2250, "float8": 4500, "tf32": 1100, "float32": 80},
        8.0,
        "nvlink",
        900,
        _HOPPER,
        _FP8,
    ),
    NominalSpec(
        "H200",
        ("h200",),
        {"bfloat16": 989, "float16": 989, "float8": 1979, "tf32": 495, "float32": 67},
        4.8,
        "nvlink",
        450,
        _HOPPER,
        _FP8,
    ),
    NominalSpec(
        "H100 PCIe",
        ("h100 pcie",),
        {"bfloat16": 756, "float16": 756, "float8": 1513, "tf32": 378, "float32": 51},
        2.0,
        "pcie",
        64,
        _HOPPER,
        _FP8,
    ),
    NominalSpec(
        "H100 SXM",
        ("h100",),
        {"bfloat16": 989, "float16": 989, "float8": 1979, "tf32": 495, "float32": 67},
        3.35,
        "nvlink",
        450,
        _HOPPER,
        _FP8,
    ),
    NominalSpec(
        "A100",
        ("a100",),
        {"bfloat16": 312, "float16": 312, "tf32": 156, "float32": 19.5, "float64": 19.5},
        2.039,
        "nvlink",
        300,
        frozenset({"graphs", "tf32"}),
    ),
    NominalSpec(
        "L4",
        ("l4",),
        {"bfloat16": 121, "float16": 121, "float8": 242, "float32": 30},
        0.3,
        "pcie",
        32,
        frozenset({"graphs", "fp8"}),
        _FP8,
    ),
    NominalSpec(
        "MI300X",
        ("mi300x", "gfx942"),
        {"bfloat16": 1307, "float16": 1307, "float8": 2615, "float32": 163, "float64": 81.7},
        5.3,
        "xgmi",
        448,
        frozenset({"graphs", "fp8"}),
        frozenset({"float8_e4m3fnuz", "float8_e5m2fnuz"}),
    ),
    NominalSpec(
        "MI250X",
        ("mi250x",),
        {"bfloat16": 383, "float16": 383, "float32": 95.7, "float64": 95.7},
        3.2,
        "xgmi",
        400,
        frozenset({"graphs"}),
    ),
    NominalSpec(
        "MI250",
        ("mi250", "gfx90a"),
        {"bfloat16": 362, "float16": 362, "float32": 90.5, "float64": 90.5},
        3.2,
        "xgmi",
        400,
        frozenset({"graphs"}),
    ),
    NominalSpec(
        "Max 1550",
        ("max 1550", "1550"),
        {"bfloat16": 839, "float16": 839, "tf32": 419, "float32": 52, "float64": 52},
        3.2,
        "xe-link",
        212,
        frozenset(),
    ),
    NominalSpec(
        "Max 1100",
        ("max 1100", "1100"),
        {"bfloat16": 352, "float16": 352, "tf32": 176, "float32": 22, "float64": 22},
        1.23,
        "xe-link",
        212,
        frozenset(),
    ),
)


def nominal_spec(model: str) -> NominalSpec | None:
    """The datasheet entry for a model name as torch reports it, or None if unknown."""
    lowered = model.lower()
    for spec in NOMINAL_SPECS:
        # Whole words only: "l4" must not match "L40S", nor "mi250" match "MI250X".
        if any(re.search(rf"\b{re.escape(p)}\b", lowered) for p in spec.patterns):
            return spec
    return None
