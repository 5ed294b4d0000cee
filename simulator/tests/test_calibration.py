"""The shipped h100-sxm profile against held-out real-H100 kernel timings.

simulator/calibration/fit.py fits the profile on one part of h100_measurements.json and writes
the other part, as the cost model's inputs plus measured seconds, to h100_dataset.json. These
tests fail when the profile or the cost model drifts away from those measurements.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kpt.sim import load_profile, op_time, transfer_time

DATASET = Path(__file__).parents[1] / "calibration" / "h100_dataset.json"
# Classes the calibrated model must predict within the brief's targets (median 10%, p90 25%);
# pinned here so that regenerating the dataset cannot quietly loosen them.
MUST_MEET_TARGETS = ("matmul", "matmul_misaligned", "elementwise", "copy", "host_link",
                     "attention", "layernorm", "rmsnorm", "host_link_pageable")  # fmt: skip
UNMODELLED: set[str] = set()  # pageable copies are modelled since the second round

pytestmark = pytest.mark.skipif(not DATASET.is_file(), reason=f"{DATASET} not in this checkout")


@pytest.fixture(scope="module")
def dataset() -> dict:
    return json.loads(DATASET.read_text())


@pytest.fixture(scope="module")
def profile():
    return load_profile("h100-sxm")


def predict(profile, item: dict) -> float:
    if item["kind"] == "host_link":
        return transfer_time(
            item["bytes"], profile.host_link_bandwidth, profile.host_link_latency_s
        )
    if item["kind"] == "host_link_pageable":
        return transfer_time(item["bytes"], profile.pageable_bandwidth, profile.pageable_latency_s)
    shape = tuple(item["shape"]) if item["shape"] else None
    return op_time(
        profile, item["engine_class"], item["flops"], item["bytes"], item["dtype"], shape
    )


def report_class(item: dict) -> str:
    return item["report_class"]  # the engine's class; misaligned GEMMs and host copies apart


def relative_errors(profile, items: list[dict], cls: str) -> np.ndarray:
    chosen = [i for i in items if report_class(i) == cls]
    assert chosen, f"no validation measurements of class {cls!r}"
    return np.array([abs(predict(profile, i) / i["measured_s"] - 1) for i in chosen])


def test_profile_is_marked_calibrated(profile):
    assert profile.calibrated


def test_every_modelled_class_has_a_bound(dataset):
    classes = {report_class(i) for i in dataset["validation"]} - UNMODELLED
    assert classes == set(dataset["bounds"])
    assert set(MUST_MEET_TARGETS) <= classes


@pytest.mark.parametrize("cls", MUST_MEET_TARGETS)
def test_core_classes_meet_the_targets(profile, dataset, cls):
    errors = relative_errors(profile, dataset["validation"], cls)
    assert np.median(errors) <= dataset["targets"]["median"], (cls, np.median(errors))
    assert np.quantile(errors, 0.9) <= dataset["targets"]["p90"], (cls, np.quantile(errors, 0.9))


def test_no_class_drifts_past_its_bound(profile, dataset):
    drifted = {}
    for cls, bound in dataset["bounds"].items():
        errors = relative_errors(profile, dataset["validation"], cls)
        median, p90 = float(np.median(errors)), float(np.quantile(errors, 0.9))
        if median > bound["median"] or p90 > bound["p90"]:
            drifted[cls] = {"median": round(median, 3), "p90": round(p90, 3), "bound": bound}
    assert not drifted, f"predictions drifted from the H100 measurements: {drifted}"


def test_headline_rates_match_the_h100(profile):
    """The anchors: ~800 TFLOP/s bf16 at 8192^3, ~3.0 TB/s device copy (read + write)."""
    n = 8192
    t = op_time(profile, "matmul", 2 * n**3, 3 * n * n * 2, "bf16", (n, n, n))
    assert 700e12 < 2 * n**3 / t < 900e12
    size = 1 << 30
    t = op_time(profile, "copy", 0, 2 * size, "uint8")
    assert 2.7e12 < 2 * size / t < 3.3e12


def test_refinements_explain_the_h100_shapes(profile):
    """The shape-aware terms the fit found: misaligned rows are ~4x slower than aligned ones,
    a tf32 GEMM of 72 tiles (0.55 of a wave) is slower per FLOP than one of 128 (~1 wave),
    and reductions take the time of the launch torch makes for them (kpt.sim._reduce_plan)."""
    aligned = op_time(profile, "matmul", 2 * 512 * 50256 * 768, 0, "bf16", (512, 50256, 768))
    odd = op_time(profile, "matmul", 2 * 512 * 50257 * 768, 0, "bf16", (512, 50257, 768))
    assert odd > 3 * aligned

    def tf32_rate(n):
        return 2 * n**3 / op_time(profile, "matmul", 2 * n**3, 0, "tf32", (n, n, n))

    assert tf32_rate(1536) < 0.7 * tf32_rate(2048)  # measured: 186 and 340 TFLOP/s
    # torch reduces 64K fp32 elements in one block (128 values a thread) and 128K across 16
    # blocks: measured 17.7 and 10.3 us.
    one_block = op_time(profile, "reduction", 65536, 65536 * 4, "fp32", (1, 65536))
    assert one_block > op_time(profile, "reduction", 131072, 131072 * 4, "fp32", (1, 131072))
    # A sum over dim 0 of [32768, 256]: 512 blocks per column meet in a grid-wide pass whose
    # last block reads the partials in turn (50 us measured); the same elements over the
    # contiguous dim need none (22 us).
    nbytes = 32768 * 256 * 4
    columns = op_time(profile, "reduction", nbytes / 4, nbytes, "fp32", (256, 32768, 0))
    rows = op_time(profile, "reduction", nbytes / 4, nbytes, "fp32", (32768, 256, 1))
    assert columns > 1.8 * rows


def test_second_round_terms_explain_the_h100_shapes(profile):
    """Depthwise convs run a direct kernel (not padded GEMM tiles), NCHW convs with a window
    pay transposes that 1x1 ones do not, flash attention with few heads fills part of a
    wave, softmax rows too wide to stay on chip are read again, and pageable host copies
    are several times slower than pinned ones."""
    m, groups = 32 * 56 * 56, 96
    flops = 2.0 * m * 1 * 9 * groups
    depthwise = op_time(profile, "conv", flops, 0, "bf16", (m, 1, 9, 9, 1))
    assert depthwise < 1e-3  # GEMM tiles of 128 would pad N = 1 and K = 9: ~10 ms
    nbytes = 2.0 * (2 * m * 128) * 2
    wide = 2.0 * m * 128 * 128 * 9
    nchw = op_time(profile, "conv", wide, nbytes, "bf16", (m, 128, 128 * 9, 9, 0))
    nhwc = op_time(profile, "conv", wide, nbytes, "bf16", (m, 128, 128 * 9, 9, 1))
    assert nchw > 1.2 * nhwc  # measured 61.3 us against 25.8 us
    one = op_time(profile, "conv", wide / 9, nbytes, "bf16", (m, 128, 128, 1, 0))
    assert one == op_time(profile, "conv", wide / 9, nbytes, "bf16", (m, 128, 128, 1, 1))

    def attention_per_flop(bh):
        f = 4.0 * bh * 1024 * 1024 * 64
        return op_time(profile, "attention", f, 0, "bf16", (bh, 1024, 1024, 64)) / f

    assert attention_per_flop(8) > 1.5 * attention_per_flop(128)  # 64 blocks: half a wave

    def softmax_rate(cols):
        rows = (1 << 28) // cols
        nbytes = 2.0 * rows * cols * 4
        return nbytes / op_time(profile, "softmax", 5.0 * rows * cols, nbytes, "fp32", (rows, cols))

    narrow = int(profile.efficiency_for("softmax").wide_row_bytes) // 4 // 2
    assert softmax_rate(131072) < 0.85 * softmax_rate(narrow)  # measured 1.5 vs 2.9 TB/s
    size = 1 << 26
    pageable = transfer_time(size, profile.pageable_bandwidth, profile.pageable_latency_s)
    pinned = transfer_time(size, profile.host_link_bandwidth, profile.host_link_latency_s)
    assert pageable > 2.5 * pinned  # ~15 GB/s against ~55 GB/s


# --- the derived h200 profile against a real H200 (calibration/validate_h200.py) -------------
H200_DATASET = DATASET.parent / "h200_dataset.json"
# Pinned at what the derived profile reached without refitting (REPORT.md, "H200 validation"):
# the memory-bound classes, where the datasheet's HBM figure is all that changed.
H200_MEDIAN_BOUNDS = {"elementwise": 0.06, "copy": 0.06, "reduction": 0.12}


@pytest.mark.skipif(not H200_DATASET.is_file(), reason="h200_dataset.json not in this checkout")
def test_the_derived_h200_profile_predicts_a_real_h200_without_refitting():
    items = json.loads(H200_DATASET.read_text())["items"]
    h200, h100 = load_profile("h200"), load_profile("h100-sxm")
    for cls, bound in H200_MEDIAN_BOUNDS.items():
        sel = [i for i in items if i["report_class"] == cls]
        derived = np.median([abs(predict(h200, i) / i["measured_s"] - 1) for i in sel])
        base = np.median([abs(predict(h100, i) / i["measured_s"] - 1) for i in sel])
        assert derived <= bound, (cls, derived)
        assert derived < base, (cls, derived, base)  # the datasheet figure is what helped
    kernels = [i for i in items if i["kind"] == "op"]
    errors = [abs(predict(h200, i) / i["measured_s"] - 1) for i in kernels]
    assert len(kernels) > 800 and np.median(errors) <= 0.11
