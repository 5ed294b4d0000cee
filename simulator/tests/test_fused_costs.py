"""The composite cost classes, built from the calibrated ones kernel by kernel: the fused RNN
layer as cuDNN runs it (an input GEMM, then per step a recurrent GEMM and the cell's kernels, in
series) and torch's fused transformer inference ops (the `encoder` class)."""

from __future__ import annotations

import pytest

from kpt.sim import InvalidRequestError
from kpt.sim._cost import op_timing
from kpt.sim._cost_composite import RNN_TILE_ROWS, rnn_timing
from kpt.sim._profiles import load_profile


@pytest.fixture(scope="module")
def h200():
    return load_profile("h200")


def test_rnn_layer_is_its_kernels_in_series(h200):
    steps, batch, hidden = 16, 8, 64
    layer = op_timing(h200, "rnn", 0, 0, "float32", (steps, batch, hidden, hidden, 4, 0))
    tile = RNN_TILE_ROWS  # the per-step GEMM computes a whole tile of rows: 8 cost 64
    gemm = op_timing(h200, "matmul", 2.0 * tile * 4 * hidden * hidden,
                     4 * (tile * hidden + hidden * 4 * hidden + tile * 4 * hidden), "tf32",
                     (tile, 4 * hidden, hidden))  # fmt: skip
    cell = op_timing(h200, "elementwise", 10 * batch * 4 * hidden, 4 * 3 * batch * 4 * hidden)
    rows = steps * batch
    first = op_timing(h200, "matmul", 2.0 * rows * 4 * hidden * hidden,
                      4 * (rows * hidden + hidden * 4 * hidden + rows * 4 * hidden), "tf32",
                      (rows, 4 * hidden, hidden))  # fmt: skip
    kernels = 1 + 2 * steps
    expected = first.duration + steps * (gemm.duration + cell.duration)
    # each kernel after the first is queued: it hides an idle device's latency, less the
    # library's own gap between a layer's kernels
    assert h200.rnn.kernel_gap_s > 0
    expected -= (h200.queued_latency_s - h200.rnn.kernel_gap_s) * (kernels - 1)
    assert layer.duration == pytest.approx(expected, rel=1e-12)


def test_rnn_time_grows_with_steps_and_backward_costs_more(h200):
    def t(steps, backward):
        return rnn_timing(h200, "fp32", (steps, 32, 512, 512, 4, backward)).duration

    assert t(128, 0) == pytest.approx(2 * t(64, 0), rel=0.1)  # serial steps dominate
    assert t(64, 1) > t(64, 0)


def test_a_batch_under_one_tile_of_rows_costs_the_whole_tile(h200):
    def t(batch):
        return rnn_timing(h200, "fp32", (64, batch, 512, 512, 4, 1)).duration

    # each step's GEMM pads its rows to the tile; only the once-per-layer GEMMs shrink
    assert t(4) == pytest.approx(t(RNN_TILE_ROWS), rel=0.15) and t(4) <= t(RNN_TILE_ROWS)
    assert t(4 * RNN_TILE_ROWS) > 1.5 * t(RNN_TILE_ROWS)


def test_a_bidirectional_layer_runs_its_two_directions_side_by_side(h200):
    shape = (32, 16, 256, 256, 3)  # a GRU layer
    kernels_only = h200.kernels_only()
    assert kernels_only.stream_gap_s == 0 and kernels_only.rnn.direction_added is None
    added = h200.rnn.direction_added
    assert 0 < added < 1
    for backward in (0, 1):
        one = rnn_timing(h200, "fp32", (*shape, backward)).duration
        both = rnn_timing(h200, "fp32", (*shape, backward, 2)).duration
        # the second direction adds part of its kernels' time (the profiler's: no launch gaps)
        summed = rnn_timing(kernels_only, "fp32", (*shape, backward)).duration
        summed -= h200.launch_latency_s  # the first kernel's idle latency is not a kernel's
        assert both == pytest.approx(one + added * summed, rel=1e-12)
        # launched a direction at a time (nn.LSTM's oneDNN op), each launch takes half
        half = rnn_timing(h200, "fp32", (*shape, backward, 2, 1, 2)).duration
        assert half == pytest.approx(both / 2, rel=1e-12)
        # a bidirectional stack's layers run in series: the next needs both directions' outputs
        stacked = rnn_timing(h200, "fp32", (*shape, backward, 2, 3)).duration
        assert stacked == pytest.approx(both, rel=1e-12)
    assert rnn_timing(h200, "fp32", (*shape, 0, 1)).duration == pytest.approx(
        rnn_timing(h200, "fp32", (*shape, 0)).duration, rel=1e-12
    )


def test_without_direction_added_a_layer_runs_its_directions_in_series():
    p = load_profile("test-asic")
    assert p.rnn.direction_added is None
    shape = (8, 4, 16, 16, 3, 1)
    one = rnn_timing(p, "fp32", shape).duration
    both = rnn_timing(p, "fp32", (*shape, 2)).duration
    # twice the kernels, queued back to back: one queued latency less than twice one
    assert both == pytest.approx(2 * one - p.queued_latency_s, rel=1e-12)


@pytest.mark.parametrize("layers", [2, 3])
def test_a_stacked_layer_takes_its_share_of_the_stack(h200, layers):
    shape = (64, 32, 512, 512, 4)  # an LSTM layer
    rnn = h200.rnn
    assert 0 < rnn.stack_added < 1 and rnn.stack_fixed_s > 0
    for backward in (0, 1):
        alone = rnn_timing(h200, "fp32", (*shape, backward)).duration
        assert rnn_timing(h200, "fp32", (*shape, backward, 1, 1)).duration == alone
        share = rnn_timing(h200, "fp32", (*shape, backward, 1, layers)).duration
        # cuDNN runs a stack's layers side by side: each above the first adds a part of one
        stack = alone + (layers - 1) * (rnn.stack_added * alone + rnn.stack_fixed_s)
        assert layers * share == pytest.approx(stack, rel=1e-12)
        assert share < alone


def test_a_profile_without_an_rnn_table_runs_a_stack_in_series():
    from kpt.sim._profile_launch import LAYERS_IN_SERIES

    p = load_profile("test-asic")
    assert p.rnn == LAYERS_IN_SERIES
    shape = (8, 4, 16, 16, 3, 0)
    alone = rnn_timing(p, "fp32", shape).duration
    assert rnn_timing(p, "fp32", (*shape, 1, 3)).duration == pytest.approx(alone, rel=1e-12)


@pytest.mark.parametrize(
    ("table", "needle"),
    [({"stack_added": 1.5}, "rnn.stack_added"), ({"stack_added": 0}, "rnn.stack_added"),
     ({"kernel_gap_us": -1}, "rnn.kernel_gap_us"), ({"overlap": 0.5}, "rnn.overlap"),
     ({"persistent_hidden": 256.5}, "rnn.persistent_hidden"),
     ({"direction_added": -0.5}, "rnn.direction_added")],
)  # fmt: skip
def test_a_bad_rnn_table_is_refused_by_name(table, needle):
    import tomllib
    from importlib import resources

    from kpt.sim._profiles import profile_from_dict

    data = tomllib.loads((resources.files("kpt.sim") / "profiles/test-asic.toml").read_text())
    with pytest.raises(InvalidRequestError, match=needle):
        profile_from_dict("bad-rnn", {**data, "rnn": table})


def test_a_narrow_elman_layer_runs_its_steps_as_one_persistent_kernel(h200):
    rnn = h200.rnn
    assert rnn.persistent_hidden == 256

    def t(gates, hidden, steps, backward=0):
        return rnn_timing(h200, "fp32", (steps, 16, hidden, hidden, gates, backward)).duration

    for backward in (0, 1):
        # 48 more steps cost 48 of the kernel's steps (and the once-a-layer GEMMs' longer
        # operands), not 48 steps' GEMMs and cells
        step = rnn.persistent_backward_step_s if backward else rnn.persistent_step_s
        grown = t(1, 256, 64, backward) - t(1, 256, 16, backward)
        assert 48 * step < grown < 1.25 * 48 * step
    # a GRU layer (3 gates) and a wider Elman layer run a GEMM and a cell each step
    assert t(3, 256, 64) - t(3, 256, 16) > 48 * 2 * rnn.persistent_step_s
    assert t(1, 512, 64) - t(1, 512, 16) > 48 * 2 * rnn.persistent_step_s


def test_rnn_shape_is_checked(h200):
    with pytest.raises(InvalidRequestError, match="steps, batch, input, hidden"):
        op_timing(h200, "rnn", 0, 0, "fp32", (4, 2, 3))
    with pytest.raises(InvalidRequestError, match="directions 1 or 2"):
        op_timing(h200, "rnn", 0, 0, "fp32", (4, 2, 3, 3, 3, 0, 2, 1, 1, 1))


def test_a_fused_transformer_op_is_its_kernels_in_series(h200):
    from kpt.sim._cost_composite import encoder_timing

    batch, seq, embed, heads, ffn = 4, 64, 256, 8, 1024
    tokens, size = batch * seq, 2  # bf16

    def matmul(m, n, k):
        return op_timing(h200, "matmul", 2.0 * m * n * k, size * (m * k + k * n + m * n), "bf16",
                         (m, n, k)).duration  # fmt: skip

    def elementwise(elements, operands=2):
        return op_timing(h200, "elementwise", elements, size * operands * elements, "bf16").duration

    norm = op_timing(h200, "layernorm", 8 * tokens * embed, size * 2 * tokens * embed, "bf16",
                     (tokens, embed)).duration  # fmt: skip
    attention = op_timing(h200, "attention", 4.0 * batch * heads * seq * seq * (embed // heads),
                          size * 4 * tokens * embed, "bf16",
                          (batch * heads, seq, seq, embed // heads, 0)).duration  # fmt: skip
    latency = h200.queued_latency_s  # each kernel after the first is queued behind the last
    # attention alone: the q/k/v GEMM, their bias and scale, fused attention, the projection
    block = matmul(tokens, 3 * embed, embed) + elementwise(3 * tokens * embed) + attention
    block += matmul(tokens, embed, embed) - 3 * latency
    shape = (batch, seq, seq, embed, heads, ffn)
    assert encoder_timing(h200, "bf16", (*shape, 1)).duration == pytest.approx(block, rel=1e-12)
    # a whole layer: two residual adds and norms around the feed-forward GEMMs and activation
    ffn_part = 2 * (elementwise(tokens * embed, 3) + norm) + matmul(tokens, ffn, embed)
    ffn_part += elementwise(tokens * ffn) + matmul(tokens, embed, ffn) - 7 * latency
    layer = op_timing(h200, "encoder", 0, 0, "bf16", (*shape, 0)).duration
    assert layer == pytest.approx(block + ffn_part, rel=1e-12)
    # returning the weights: the scores as two batched GEMMs around a softmax, then averaged
    explicit = encoder_timing(h200, "bf16", (*shape, 2)).duration
    assert explicit > block
    with pytest.raises(InvalidRequestError, match="batch, seq_q, seq_k, embed, heads, ffn"):
        op_timing(h200, "encoder", 0, 0, "bf16", (batch, seq, embed))
