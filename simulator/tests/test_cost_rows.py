"""Row-wise op classes (softmax, layer norm): rows per warp or block, the kernel torch picks
for a row's width, and what each costs on test-asic, computed by hand."""

from __future__ import annotations

import pytest
from refined_asic import US, asic_with

from kpt.sim import op_time
from kpt.sim._cost import block_softmax_kernel


def test_layernorm_rows_cost_and_softmax_falls_back_to_norm():
    p = asic_with(layernorm={"row_gps": 0.001}, norm={"memory_e_max": 0.5})
    nbytes = 1e6
    t = op_time(p, "layer_norm", 0, nbytes, "fp32", (1000, 250))
    assert t == pytest.approx(US + nbytes / 100e9 + 1000 / 1e6)
    # softmax has no table of its own: it uses norm's (half the bandwidth), not default's
    assert op_time(p, "softmax", 0, nbytes, "fp32", (1000, 250)) == pytest.approx(
        US + nbytes / 50e9
    )


def test_few_rows_cannot_reach_hbm_bandwidth():
    p = asic_with(softmax={"row_stream_gbps": 1.0})  # 1 GB/s per row's block
    nbytes = 1e6
    few = op_time(p, "softmax", 0, nbytes, "fp32", (10, 25000))  # 10 rows: 10 GB/s
    assert few == pytest.approx(US + nbytes / 10e9)
    many = op_time(p, "softmax", 0, nbytes, "fp32", (1000, 250))  # capped by HBM, 100 GB/s
    assert many == pytest.approx(US + nbytes / 100e9)


def test_wide_rows_are_read_once_per_pass_and_compute_in_one_precision():
    p = asic_with(softmax={"wide_row_bytes": 4096, "wide_row_factor": 2.0})
    nbytes = 1e6
    narrow = op_time(p, "softmax", 0, nbytes, "fp32", (250, 1000))  # 4000-byte rows
    wide = op_time(p, "softmax", 0, nbytes, "fp32", (25, 10000))  # 40000-byte rows
    assert narrow == pytest.approx(US + nbytes / 100e9)
    assert wide == pytest.approx(US + 2 * nbytes / 100e9)
    q = asic_with(softmax={"class_tflops": 0.25})  # the vector unit: 0.5 TFLOP/s per dtype
    assert op_time(q, "softmax", 1e9, 0, "bf16", (1000, 1000)) == pytest.approx(US + 1e9 / 0.25e12)
    assert op_time(q, "softmax", 1e9, 0, "bf16") == op_time(q, "softmax", 1e9, 0, "fp32")


def test_softmax_rows_run_one_warp_each_or_one_block_per_unit():
    p = asic_with(softmax={"row_stream_gbps": 10.0, "warp_row_gbps": 1.0})
    nbytes = 1e6
    warp = op_time(p, "softmax", 0, nbytes, "fp32", (5, 2048))  # 8 KiB rows: a warp each
    assert warp == pytest.approx(US + nbytes / 5e9)
    bf16 = op_time(p, "softmax", 0, nbytes, "bf16", (5, 2048))  # the same elements/s
    assert bf16 == pytest.approx(US + nbytes / 2.5e9)
    # Wider rows: one block per row, and test-asic's one unit streams one row at a time.
    block = op_time(p, "softmax", 0, nbytes, "fp32", (5, 4096))
    assert block == pytest.approx(US + nbytes / 10e9)
    without = asic_with(softmax={"row_stream_gbps": 10.0})  # the old model: every row streams
    assert op_time(without, "softmax", 0, nbytes, "fp32", (5, 4096)) == pytest.approx(
        US + nbytes / 50e9
    )


def test_short_softmax_rows_compute_at_their_own_rate():
    p = asic_with(softmax={"class_tflops": 0.25, "short_row_tflops": 0.5})
    flops = 1e9
    short = op_time(p, "softmax", flops, 0, "bf16", (1000, 1024))  # 32 elements per lane
    assert short == pytest.approx(US + flops / 0.5e12)
    wide = op_time(p, "softmax", flops, 0, "bf16", (500, 2048))  # 64 per lane: the class rate
    assert wide == pytest.approx(US + flops / 0.25e12)


def test_block_softmax_rows_run_the_kernel_torch_picks():
    """Rows too wide for a warp: in registers below 10 per thread of 1024 (their own rate), in
    shared memory where they fit 48 KiB in whole 16-byte vectors (read once), else from HBM
    once per pass (wide_row_factor), whatever wide_row_bytes says."""
    assert [block_softmax_kernel((8, cols), "fp32") for cols in (9216, 9220, 12000, 12292)] == [
        "registers", "shared", "shared", "global"]  # fmt: skip
    assert block_softmax_kernel((8, 24000), "bf16") == "shared"
    assert block_softmax_kernel((8, 10001), "bf16") == "global"  # not whole 16-byte vectors
    p = asic_with(softmax={"class_tflops": 0.25, "register_row_tflops": 0.125,
                            "wide_row_bytes": 4096, "wide_row_factor": 2.0})  # fmt: skip
    flops, nbytes = 1e9, 1e6
    assert op_time(p, "softmax", flops, 0, "fp32", (100, 4096)) == pytest.approx(US + 8e-3)
    assert op_time(p, "softmax", flops, 0, "fp32", (100, 12000)) == pytest.approx(US + 4e-3)
    # 48 KB rows in shared memory are read once; 64 KB ones once per pass
    assert op_time(p, "softmax", 0, nbytes, "fp32", (20, 12000)) == pytest.approx(US + 1e-5)
    assert op_time(p, "softmax", 0, nbytes, "fp32", (20, 16384)) == pytest.approx(US + 2e-5)


def test_softmax_rows_read_again_from_the_cache_where_the_rows_in_flight_fit():
    """The third block kernel reads a row again for each pass: from the cache where the rows in
    flight (two 1024-thread blocks per SM) fit it (cached_row_factor), else from HBM
    (wide_row_factor). test-asic: one SM, 1 MiB of cache, 100 GB/s."""
    p = asic_with(softmax={"class_tflops": 0.25, "register_row_tflops": 0.125,
                            "wide_row_factor": 2.0, "cached_row_factor": 1.25})  # fmt: skip
    nbytes = 1e6
    # two 64 KiB rows in flight fit 1 MiB; two 1 MiB rows do not, one does
    assert op_time(p, "softmax", 0, nbytes, "fp32", (20, 16384)) == pytest.approx(US + 1.25e-5)
    assert op_time(p, "softmax", 0, nbytes, "fp32", (20, 262144)) == pytest.approx(US + 2e-5)
    assert op_time(p, "softmax", 0, nbytes, "fp32", (1, 262144)) == pytest.approx(US + 1.25e-5)
