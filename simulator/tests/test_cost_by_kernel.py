"""Launches the cost model prices by the kernels the GPU libraries run for them, computed by
hand on test-asic (one compute unit, HBM 100 GB/s, launch 1 us): a training-mode batch norm
by channel, and a convolution's backward as its data and weight gradients."""

from __future__ import annotations

import pytest
from refined_asic import US, asic_with

from kpt.sim import op_time


def test_nchw_batch_norm_streams_each_channel_in_its_own_block():
    # A block streams 4e9 bytes/s of fp32 elements: 1 ns an element, plus 1 us a wave.
    p = asic_with(batchnorm={"row_stream_gbps": 4.0, "block_us": 1.0, "backward_work": 3.0})
    nbytes = 8e6  # what the op moves: its time is the channels' blocks, not these bytes
    # Two channels of 1e6 elements on one unit: two waves.
    forward = op_time(p, "batchnorm", 0, nbytes, "fp32", (2, 1_000_000, 0, 0))
    assert forward == pytest.approx(US + 2 * (1e-3 + US))
    # The same elements in 20 channels: 20 waves of 1e5, each paying its block's start.
    assert op_time(p, "batchnorm", 0, nbytes, "fp32", (20, 100_000, 0, 0)) == pytest.approx(
        US + 20 * (1e-4 + US)
    )
    # A backward's element takes backward_work times a forward's.
    assert op_time(p, "batchnorm", 0, nbytes, "fp32", (2, 1_000_000, 0, 1)) == pytest.approx(
        US + 2 * (3e-3 + US)
    )
    # A 16-bit channel streams the same elements/s: half the bytes, the same time.
    assert op_time(p, "batchnorm", 0, nbytes / 2, "bf16", (2, 1_000_000, 0, 0)) == forward


def test_channels_last_batch_norm_streams_its_bytes_across_the_chip():
    p = asic_with(batchnorm={"row_stream_gbps": 4.0, "block_us": 1.0, "memory_e_max": 0.5})
    nbytes = 8e6
    assert op_time(p, "batchnorm", 0, nbytes, "fp32", (2, 1_000_000, 1, 0)) == pytest.approx(
        US + nbytes / 50e9
    )
    # Without its figures a profile prices either layout from norm's table the same way.
    q = asic_with(norm={"memory_e_max": 0.25})
    for layout in (0, 1):
        assert op_time(q, "batchnorm", 0, nbytes, "fp32", (2, 1_000_000, layout, 0)) == (
            pytest.approx(US + nbytes / 25e9)
        )


def test_conv_backward_prices_the_data_and_the_weight_gradient_kernels():
    p = asic_with(conv={"backward_work": 2.0})
    flops, shape = 2e9, (1000, 1000, 1000, 9, 1)  # one forward: 2 ms on the 1 TFLOP/s units
    forward = op_time(p, "conv", flops, 0, "tf32", shape)
    assert forward == pytest.approx(US + 2e-3)
    assert op_time(p, "conv", flops, 0, "tf32", (*shape, 0)) == forward  # 0: a forward
    data = op_time(p, "conv", flops, 0, "tf32", (*shape, 1))
    assert data == forward  # the data gradient: the forward's GEMM turned around
    weight = op_time(p, "conv", flops, 0, "tf32", (*shape, 2))
    assert weight == pytest.approx(US + 2 * 2e-3)  # backward_work forwards' kernel time
    # Both: flops name both gradients' together; two kernels, the second queued (test-asic
    # hides no launch latency behind earlier work: each pays its launch).
    both = op_time(p, "conv", 2 * flops, 0, "tf32", (*shape, 3))
    assert both == pytest.approx(data + weight)
    # A profile without the figure prices the weight gradient as a forward.
    assert op_time(asic_with(), "conv", flops, 0, "tf32", (*shape, 2)) == pytest.approx(forward)
