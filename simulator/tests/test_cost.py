import tomllib
from importlib import resources

import pytest
from refined_asic import US, asic_with

import kpt.sim
from kpt.sim import InvalidRequestError, efficiency, load_profile, op_time, shape_penalty
from kpt.sim._cost import causal_share, conv_groups, warp_per_row
from kpt.sim._op_cost import normalize_class
from kpt.sim._reduce_plan import plan


def test_test_asic_roofline_is_exact():
    p = load_profile("test-asic")
    launch = p.kernel_launch_s
    # compute bound: 2e6 FLOPs at 1 TFLOP/s matrix peak
    assert op_time(p, "matmul", 2e6, 0) == pytest.approx(launch + 2e6 / 1e12)
    # memory bound: 1e6 bytes at 100 GB/s
    assert op_time(p, "elementwise", 1e3, 1e6) == pytest.approx(launch + 1e6 / 100e9)
    # vector units are half as fast on test-asic
    assert op_time(p, "elementwise", 1e6, 0) == pytest.approx(launch + 1e6 / 0.5e12)


def test_efficiency_curve_saturates():
    assert efficiency(1e3, 0.8, 1e3) == pytest.approx(0.4)
    assert efficiency(1e12, 0.8, 1e3) == pytest.approx(0.8, rel=1e-6)
    assert efficiency(5, 0.9, 0) == 0.9


def test_big_matmul_on_h100_is_near_its_efficiency_ceiling():
    p = load_profile("h100-sxm")
    n = 8192
    flops = 2 * n**3
    t = op_time(p, "matmul", flops, 3 * n * n * 2, "bf16", (n, n, n))
    achieved = flops / t
    e_max = p.efficiency_for("matmul").compute_e_max
    assert 0.9 * e_max * 989.4e12 < achieved <= e_max * 989.4e12


def test_odd_shapes_pay_a_tile_penalty():
    p = load_profile("mi300x")
    tile = p.efficiency_for("matmul").tile
    assert shape_penalty((tile, 2 * tile), tile) == 1.0
    assert shape_penalty((tile + 1,), tile) == pytest.approx((tile + 1) / (2 * tile))
    n = 16 * tile
    aligned = op_time(p, "matmul", 2 * n**3, 0, "bf16", (n, n, n))
    odd = op_time(p, "matmul", 2 * (n + 1) ** 3, 0, "bf16", (n + 1, n + 1, n + 1))
    assert odd > 1.05 * aligned


def test_aliases_and_open_vocabulary():
    p = load_profile("h100-sxm")
    assert op_time(p, "bmm", 1e9, 0, "bfloat16") == op_time(p, "matmul", 1e9, 0, "bf16")
    assert op_time(p, "my_custom_op", 1e9, 1e6) > 0  # unknown classes use efficiency.default


def test_bad_cost_inputs():
    p = load_profile("gaudi3")
    with pytest.raises(InvalidRequestError, match="fp64 matmul is not supported on gaudi3"):
        op_time(p, "matmul", 1e9, 0, "fp64")
    with pytest.raises(InvalidRequestError, match="dtype 'float7'"):
        op_time(p, "matmul", 1e9, 0, "float7")
    with pytest.raises(InvalidRequestError, match=">= 0"):
        op_time(p, "matmul", -1, 0)


def test_per_dtype_fixed_cost_adds_to_the_launch():
    p = asic_with(matmul={"fixed_us": {"fp32": 5.0}})
    assert op_time(p, "matmul", 1e6, 0, "fp32") == pytest.approx((1 + 5 + 1) * US)
    assert op_time(p, "matmul", 1e6, 0, "bf16") == pytest.approx((1 + 1) * US)


def test_misaligned_tensor_core_rows_fall_to_the_slow_rate():
    p = asic_with(matmul={"misaligned_tflops": 0.25})
    flops = 2 * 64 * 64 * 64 * 1e3
    aligned = op_time(p, "matmul", flops, 0, "bf16", (64, 64, 64))
    assert aligned == pytest.approx(US + flops / 1e12)
    # 50257 bf16 elements = 100514 bytes, not a multiple of 16: a quarter of the rate
    odd = op_time(p, "matmul", flops, 0, "bf16", (64, 50257, 64))
    assert odd == pytest.approx(US + flops / 0.25e12)
    assert op_time(p, "matmul", flops, 0, "bf16", (63, 64, 64)) == aligned  # M is free
    # fp32 GEMMs do not use tensor cores: no alignment rule
    assert op_time(p, "matmul", flops, 0, "fp32", (64, 50257, 64)) == aligned
    # The fourth entry adds what only strides show (a transposed operand's leading dimension),
    # as the bytes every operand's rows are aligned to
    assert op_time(p, "matmul", flops, 0, "bf16", (64, 64, 64, 2)) == odd
    assert op_time(p, "matmul", flops, 0, "bf16", (64, 64, 64, 16)) == aligned
    assert op_time(p, "matmul", flops, 0, "bf16", (64, 50257, 64, 16)) == odd  # rows still count
    assert op_time(p, "matmul", flops, 0, "fp32", (64, 64, 64, 2)) == aligned


def test_the_fallback_kernels_rate_by_alignment_and_the_odd_rows_owner():
    p = asic_with(matmul={"misaligned_tflops": 0.25, "misaligned_output_tflops": 0.125,
                           "align2_tflops": 0.5, "tile": 1})  # fmt: skip
    flops = 2 * 128 * 128 * 128 * 1e3

    def rate(shape):
        return flops / (op_time(p, "matmul", flops, 0, "bf16", shape) - US) / 1e12

    assert rate((128, 128, 128)) == pytest.approx(1.0)
    assert rate((128, 128, 129)) == pytest.approx(0.25)  # an input's row: align-1
    assert rate((128, 129, 128)) == pytest.approx(0.125)  # the output's row: align-1, slower
    assert rate((128, 130, 128)) == pytest.approx(0.5)  # 2 mod 4 elements: align-2
    assert rate((128, 132, 132)) == pytest.approx(0.5)  # 4 mod 8: align-4, the same kernels
    assert rate((128, 128, 128, 4)) == pytest.approx(0.5)  # strides: 4 bytes, 2 elements
    assert rate((128, 128, 128, 2)) == pytest.approx(0.25)  # 2 bytes: one element
    assert rate((128, 130, 129)) == pytest.approx(0.25)  # the least aligned row decides


def test_the_fallback_kernels_pad_rows_to_their_own_tile():
    p = asic_with(matmul={"misaligned_tflops": 0.25, "misaligned_tile": 128, "tile": 1})
    flops = 2 * 8 * 50257 * 64
    few_rows = op_time(p, "matmul", flops, 0, "bf16", (8, 50257, 64))
    padded = 2 * 128 * (393 * 128) * 64  # M and N to 128-row tiles, as cuBLAS's align-1 GEMMs
    assert few_rows == pytest.approx(US + padded / 0.25e12)
    aligned = op_time(p, "matmul", flops, 0, "bf16", (8, 50256, 64))
    assert aligned == pytest.approx(US + flops / 1e12)  # the class's own tile (1 here)


def test_misaligned_rows_at_a_few_rows_run_gemv_kernels():
    """GPT-2's 50257-wide head in decode: cuBLAS runs gemv at 1-4 rows (any alignment), at
    misaligned_gemv_factor of the skinny curve; from 8 rows the align-1 tiles."""
    p = asic_with(matmul={"misaligned_tflops": 0.001, "misaligned_tile": 128, "tile": 1,
                           "skinny_rows": 16, "skinny_memory_e_max": 1.0,
                           "skinny_memory_x_half": 1e6, "misaligned_gemv_factor": 0.5})  # fmt: skip
    weight = 2.0 * 50257 * 768
    for rows in (1, 4):
        gemv = op_time(p, "matmul", 2 * rows * 50257 * 768, weight, "bf16", (rows, 50257, 768))
        assert gemv == pytest.approx(US + (1e6 + weight) / (0.5 * 100e9))
    tiles = op_time(p, "matmul", 2 * 8 * 50257 * 768, weight, "bf16", (8, 50257, 768))
    assert tiles == pytest.approx(US + 2 * 128 * (393 * 128) * 768 / 0.001e12)
    aligned = op_time(p, "matmul", 2 * 50256 * 768, weight, "bf16", (1, 50256, 768))
    # Aligned rows take the faster curve: here the class's, which has no start-up.
    assert aligned == pytest.approx(US + weight / 100e9)


def test_a_skinny_gemm_streams_on_its_own_curve_where_that_is_faster():
    # The class streams at half of HBM's 100 GB/s; the skinny regime at all of it after a
    # start-up of 1 MB's worth.
    p = asic_with(matmul={"memory_e_max": 0.5, "skinny_rows": 16, "skinny_memory_e_max": 1.0,
                           "skinny_memory_x_half": 1e6})  # fmt: skip
    weight = 2 * 4096 * 4096
    gemv = op_time(p, "matmul", 2 * 4096 * 4096, weight, "bf16", (1, 4096, 4096))
    assert gemv == pytest.approx(US + (1e6 + weight) / 100e9)
    transposed = op_time(p, "matmul", 2 * 4096 * 4096, weight, "bf16", (4096, 16, 4096))
    assert transposed == pytest.approx(US + (1e6 + weight) / 100e9)  # few columns count too
    wide = op_time(p, "matmul", 2 * 17 * 4096 * 4096, weight, "bf16", (17, 4096, 4096))
    assert wide == pytest.approx(US + weight / 50e9)  # past the threshold: the class's curve
    # A small product starts faster on the class's curve: cuBLAS's heuristics keep that one.
    small = op_time(p, "matmul", 2 * 64 * 64, 2 * 64 * 64, "bf16", (1, 64, 64))
    assert small == pytest.approx(US + 2 * 64 * 64 / 50e9)
    with pytest.raises(InvalidRequestError, match="skinny_memory_e_max"):
        asic_with(matmul={"skinny_rows": 16})


def test_conv_pads_input_channels_to_the_alignment():
    p = asic_with(conv={"channel_align": 8})
    flops = 1e9
    stem = op_time(p, "conv", flops, 0, "bf16", (1024, 64, 3 * 49, 49))  # Cin 3 -> 8
    assert stem == pytest.approx(US + flops * 8 / 3 / 1e12)
    wide = op_time(p, "conv", flops, 0, "bf16", (1024, 64, 64 * 9, 9))  # Cin 64: aligned
    assert wide == pytest.approx(US + flops / 1e12)
    assert op_time(p, "conv", flops, 0, "bf16", (1024, 64, 147)) == wide  # no window: no pad


def test_attention_pays_one_exponential_per_score():
    p = asic_with(attention={"score_gps": 1.0})
    bh, s, hd = 8, 256, 64
    scores = bh * s * s
    flops = 4 * hd * scores
    t = op_time(p, "attention", flops, 0, "bf16", (bh, s, s, hd))
    assert t == pytest.approx(US + flops / 1e12 + scores / 1e9)
    # the same FLOPs with twice the head dim have half the scores: faster per FLOP
    wide = op_time(p, "attention", flops, 0, "bf16", (bh, s, s // 2, 2 * hd))
    assert wide == pytest.approx(US + flops / 1e12 + scores / 2 / 1e9)


def test_a_causal_mask_skips_the_key_tiles_above_the_diagonal():
    p = asic_with(attention={"score_gps": 1.0, "wave_tile": {"bf16": [128, 128]}})
    bh, hd = 8, 64

    def work(sq, sk, causal):  # seconds past the launch, FLOPs of the full product
        flops = 4.0 * bh * sq * sk * hd
        return op_time(p, "attention", flops, 0, "bf16", (bh, sq, sk, hd, causal)) - US

    # 16 query tiles of 2048: (1 + 2 + ... + 16) of 16 x 16 key tiles computed
    assert work(2048, 2048, 1) == pytest.approx(work(2048, 2048, 0) * 136 / 256)
    assert work(128, 128, 1) == pytest.approx(work(128, 128, 0))  # one tile: nothing skipped
    # SDPA's mask is top-left: 4 query tiles against 32 key tiles read only the first 4
    assert work(512, 4096, 1) == pytest.approx(work(512, 4096, 0) * 10 / 128)
    assert causal_share(2048, 2048, 128, 64) == pytest.approx(136 / 256)


def test_a_causal_kernel_with_few_blocks_per_sm_saves_less_than_its_mask():
    """The blocks of a causal kernel differ: with few per SM the heaviest set the time."""
    data = tomllib.loads((resources.files("kpt.sim") / "profiles" / "test-asic.toml").read_text())
    data["compute_units"] = 2
    data["efficiency"]["attention"] = {"compute_e_max": 1.0, "compute_x_half": 0,
                                       "memory_e_max": 1.0, "memory_x_half": 0,
                                       "wave_tile": {"bf16": [128, 128]}}  # fmt: skip
    p = kpt.sim.profile_from_dict("asic-2-units", data)
    seq, hd = 256, 64  # 2 query tiles read 1 and 2 of 2 key tiles (3 of 4)

    def work(bh, causal):
        flops = 4.0 * bh * seq * seq * hd
        return op_time(p, "attention", flops, 0, "bf16", (bh, seq, seq, hd, causal)) - US

    # one head: 2 blocks on 2 SMs, one wave: the full row (2 tiles) sets the time
    assert work(1, 1) == pytest.approx(work(1, 0))
    # two heads in launch order: SM 1 ends the 1-tile block at 1 and takes the next head's
    # (ends at 2); its 2-tile block then waits for an SM free at 2 and ends at 4, as the
    # unmasked kernel's two waves of 2 tiles
    assert work(2, 1) == pytest.approx(work(2, 0))
    # many heads: the SMs stay evenly loaded, the mask's share (3 of 4) stands
    assert work(512, 1) == pytest.approx(work(512, 0) * 3 / 4, rel=0.01)


def test_a_profile_may_give_an_attention_backward_its_own_work():
    def backward(**fields):
        p = asic_with(attention={"score_gps": 1.0, **fields})
        bh, s, hd = 8, 256, 64
        forward = 4.0 * bh * s * s * hd
        shape = (bh, s, s, hd, 0, 1)  # a backward, named ATTENTION_BACKWARD_WORK forwards
        t = op_time(p, "attention", kpt.sim.ATTENTION_BACKWARD_WORK * forward, 0, "bf16", shape)
        return t - US, forward / 1e12, bh * s * s / 1e9  # products' and softmax's seconds

    t, products, softmax = backward()
    assert t == pytest.approx(kpt.sim.ATTENTION_BACKWARD_WORK * (products + softmax))
    t, products, softmax = backward(backward_work=2.0, backward_score_work=0.5)
    assert t == pytest.approx(2.0 * products + 0.5 * softmax)
    t, products, softmax = backward(backward_work=2.0)  # the softmax takes the products' work
    assert t == pytest.approx(2.0 * (products + softmax))


def test_a_dtype_table_overrides_its_class_for_that_dtype_alone():
    p = asic_with(attention={"score_gps": 1.0, "fp32": {"class_tflops": 0.25}})
    flops = 4.0 * 8 * 256 * 256 * 64
    shape = (8, 256, 256, 64)
    softmax = 8 * 256 * 256 / 1e9  # the class's score rate, read by the fp32 table too
    assert op_time(p, "attention", flops, 0, "fp32", shape) == pytest.approx(
        US + flops / 0.25e12 + softmax
    )
    bf16 = op_time(p, "attention", flops, 0, "bf16", shape)
    assert bf16 == pytest.approx(US + flops / 1e12 + softmax)  # the matrix peak, untouched


def test_a_multi_tensor_launch_of_few_blocks_streams_at_their_rate():
    p = asic_with(multi_tensor={"block_stream_gbps": 10.0})  # HBM: 100 GB/s

    def streaming(nbytes, blocks, dtype="fp32"):  # seconds past the launch
        return op_time(p, "multi_tensor", 0, nbytes, dtype, (blocks,)) - US

    assert streaming(1e6, 2) == pytest.approx(1e6 / 20e9)  # two blocks of 10 GB/s
    assert streaming(1e6, 64) == pytest.approx(1e6 / 100e9)  # HBM binds
    assert streaming(1e6, 2, "bf16") == pytest.approx(1e6 / 10e9)  # same elements/s
    # a profile without the table: elementwise's efficiency, no block term
    plain = asic_with()
    assert op_time(plain, "multi_tensor", 0, 1e6, "fp32", (2,)) == op_time(
        plain, "elementwise", 0, 1e6, "fp32"
    )
    with pytest.raises(InvalidRequestError, match="thread blocks"):
        op_time(p, "multi_tensor", 0, 1e6, "fp32", (2, 3))


def test_reductions_wait_for_their_rounds_of_loads():
    """One block reduces 65536 elements: 512 threads, 128 values each, loaded as 4-element
    vectors (fp32) in 32 rounds, or 8-element ones (16-bit sums) in 16."""
    p = asic_with(reduction={"load_round_us": 1.0, "block_us": 0.5})
    nbytes = 65536 * 4.0
    fp32 = op_time(p, "reduction", 65536, nbytes, "fp32", (1, 65536))
    assert fp32 == pytest.approx(US + (32 + 0.5) * US)  # latency-bound: HBM takes 2.6 us
    assert op_time(p, "reduction", 65536, nbytes) == fp32  # no shape: the full reduction
    assert op_time(p, "reduction", 65536, nbytes / 2, "bf16", (1, 65536)) == pytest.approx(
        US + (16 + 0.5) * US
    )
    without = asic_with(reduction={})  # no launch terms: the roofline alone
    assert op_time(without, "reduction", 65536, nbytes, "fp32", (1, 65536)) == pytest.approx(
        US + nbytes / 100e9
    )


def test_reductions_that_do_not_sum_16_bit_inputs_take_longer_rounds():
    # amax, max, var... over bf16 accumulate in bf16 (summing flag 0): each round of loads
    # costs compare_round_factor times a sum's; fp32 inputs and sums are unchanged.
    p = asic_with(reduction={"load_round_us": 1.0, "block_us": 0.5, "compare_round_factor": 2})
    nbytes = 65536 * 2.0
    summed = op_time(p, "reduction", 65536, nbytes, "bf16", (1, 65536, 1, 1))
    assert summed == op_time(p, "reduction", 65536, nbytes, "bf16", (1, 65536))
    assert summed == pytest.approx(US + (16 + 0.5) * US)
    assert op_time(p, "reduction", 65536, nbytes, "bf16", (1, 65536, 1, 0)) == pytest.approx(
        US + (2 * 16 + 0.5) * US
    )
    fp32 = op_time(p, "reduction", 65536, 2 * nbytes, "fp32", (1, 65536, 1, 1))
    assert op_time(p, "reduction", 65536, 2 * nbytes, "fp32", (1, 65536, 1, 0)) == fp32
    columns = (256, 32768, 0)  # the flag leaves a strided reduction strided
    assert op_time(p, "reduction", 2**23, 2**24, "bf16", (*columns, 1)) == op_time(
        p, "reduction", 2**23, 2**24, "bf16", columns
    )


def test_an_extent_split_across_blocks_pays_a_grid_wide_pass():
    p = asic_with(reduction={"load_round_us": 1.0, "second_pass_us": 3.0, "tail_load_us": 0.5})
    shape = (256, 32768, 0)  # a sum over dim 0 of [32768, 256]: few outputs, a long extent
    launch = plan(*shape[:2], False, 4, units=1)  # test-asic has one unit
    assert launch.blocks_per_output > 1
    latency = launch.waves(1) * launch.load_rounds * US
    grid_pass = 3 * US + launch.tail_loads * 0.5 * US
    nbytes = 256 * 32768 * 4.0
    assert op_time(p, "reduction", 256 * 32768, nbytes, "fp32", shape) == pytest.approx(
        US + max(latency, nbytes / 100e9) + grid_pass
    )
    # The same elements over the contiguous dim: a block per 16 outputs, no grid-wide pass.
    rows = plan(32768, 256, True, 4, units=1)
    assert rows.blocks_per_output == 1
    latency = rows.waves(1) * rows.load_rounds * US
    assert op_time(p, "reduction", 256 * 32768, nbytes, "fp32", (32768, 256, 1)) == (
        pytest.approx(US + max(latency, nbytes / 100e9))
    )


def test_depthwise_convs_run_a_direct_kernel_without_tiles():
    p = asic_with(conv={"tile": 128, "grouped_tflops": 0.1})
    groups, m = 96, 1000
    flops = 2.0 * m * 1 * 9 * groups  # per group: N = 1 output channel, K = 9
    t = op_time(p, "conv", flops, 0, "bf16", (m, 1, 9, 9))
    assert t == pytest.approx(US + flops / 0.1e12)
    # without the rate the GEMM tiles pad N = 1 and K = 9 to 128 each
    padded = op_time(asic_with(conv={"tile": 128}), "conv", flops, 0, "bf16", (m, 1, 9, 9))
    assert padded > 100 * t


def test_depthwise_kernels_differ_by_layout_and_pay_per_output():
    # cuDNN's channels-last kernel (bf16 its own, faster), PyTorch's NCHW kernel for both
    # dtypes; NCHW with a window would pay transposes to NHWC if it ran a GEMM: it does not.
    p = asic_with(conv={"grouped_tflops": 0.1, "grouped_output_gps": 10.0,
                         "nchw_grouped_tflops": 0.05, "nchw_grouped_output_gps": 2.0,
                         "nchw_passes": 3.0, "bf16": {"grouped_tflops": 0.4}})  # fmt: skip
    groups, m, window = 96, 1000, 9
    flops = 2.0 * m * window * groups
    outputs = m * groups
    nbytes = 1e3  # memory never binds here

    def conv(dtype, layout):
        return op_time(p, "conv", flops, nbytes, dtype, (m, 1, window, window, layout))

    assert conv("fp32", 1) == pytest.approx(US + flops / 0.1e12 + outputs / 10e9)
    assert conv("bf16", 1) == pytest.approx(US + flops / 0.4e12 + outputs / 10e9)
    nchw = US + flops / 0.05e12 + outputs / 2e9
    assert conv("fp32", 0) == pytest.approx(nchw)
    assert conv("bf16", 0) == pytest.approx(nchw)


def test_attention_blocks_quantize_into_waves():
    data = tomllib.loads((resources.files("kpt.sim") / "profiles" / "test-asic.toml").read_text())
    data["compute_units"] = units = 8
    data["efficiency"]["attention"] = {"compute_e_max": 1.0, "compute_x_half": 0,
                                       "memory_e_max": 1.0, "memory_x_half": 0,
                                       "wave_tile": {"bf16": [128, 128]}}  # fmt: skip
    p = kpt.sim.profile_from_dict("asic-8-units", data)
    seq, hd = 128, 64

    def per_flop(bh):
        flops = 4.0 * bh * seq * seq * hd
        return (op_time(p, "attention", flops, 0, "bf16", (bh, seq, seq, hd)) - US) / flops

    # half a wave of blocks takes as long as a full one: twice the time per FLOP
    assert per_flop(units // 2) == pytest.approx(2 * per_flop(units), rel=0.05)
    assert per_flop(2 * units) == pytest.approx(per_flop(units))


def test_nchw_convs_with_a_window_pay_transposes():
    p = asic_with(conv={"nchw_passes": 2.0})
    flops, nbytes = 1e9, 1e6
    nhwc = op_time(p, "conv", flops, nbytes, "bf16", (1024, 64, 64 * 9, 9, 1))
    nchw = op_time(p, "conv", flops, nbytes, "bf16", (1024, 64, 64 * 9, 9, 0))
    # compute-bound (1 ms) plus two passes over the bytes at 100 GB/s (20 us)
    assert nchw == pytest.approx(nhwc + 2 * nbytes / 100e9)
    pointwise = op_time(p, "conv", flops, nbytes, "bf16", (1024, 64, 64, 1, 0))
    assert pointwise == op_time(p, "conv", flops, nbytes, "bf16", (1024, 64, 64, 1, 1))


def test_pointwise_convs_are_priced_as_the_gemm_they_are():
    # The conv class's own curve is four times slower than the matmul class's here.
    p = asic_with(conv={"compute_e_max": 0.25, "pointwise_gemm": 1})
    m, n, k = 4096, 256, 512
    flops, nbytes = 2.0 * m * n * k, 1e6
    gemm = op_time(p, "matmul", flops, nbytes, "bf16", (m, n, k))
    for layout in (0, 1):
        assert op_time(p, "conv", flops, nbytes, "bf16", (m, n, k, 1, layout)) == gemm
    # a window, or groups (a depthwise 1x1 conv), keep the conv class's implicit GEMM
    windowed = op_time(p, "conv", flops, nbytes, "bf16", (m, n, k, 9, 1))
    assert windowed == pytest.approx(US + flops / 0.25e12)
    grouped = op_time(p, "conv", 4 * flops, nbytes, "bf16", (m, n, k, 1, 1))
    assert grouped == pytest.approx(US + 4 * flops / 0.25e12)
    # a stride over 1 gathers pixels: the conv class too, forward and backward
    assert op_time(p, "conv", flops, nbytes, "bf16", (m, n, k, 1, 1, 0, 1)) == windowed
    assert op_time(p, "conv", flops, nbytes, "bf16", (m, n, k, 1, 1, 0, 0)) == gemm
    data_gradient = op_time(p, "conv", flops, nbytes, "bf16", (m, n, k, 1, 1, 1, 1))
    assert data_gradient == windowed
    off = asic_with(conv={"compute_e_max": 0.25})
    assert op_time(off, "conv", flops, nbytes, "bf16", (m, n, k, 1, 1)) == windowed


def test_other_profiles_keep_their_predictions_for_refined_classes():
    """Profiles without the new fields predict as before: softmax and layer norm use norm."""
    for name in ("mi300x", "gaudi3", "test-asic"):
        p = load_profile(name)
        norm = op_time(p, "norm", 1e6, 1e7, "bf16")
        assert op_time(p, "softmax", 1e6, 1e7, "bf16", (100, 100)) == norm
        assert op_time(p, "layernorm", 1e6, 1e7, "bf16", (100, 100)) == norm
        eff = p.efficiency_for("matmul")
        assert (eff.misaligned_flops, eff.fixed_s, eff.channel_align) == (0.0, {}, 1)
        tile = eff.tile
        t = op_time(p, "matmul", 1e9, 0, "bf16", (tile, 4 * tile + 1, tile))
        assert t > op_time(p, "matmul", 1e9, 0, "bf16", (tile, 4 * tile, tile)) or tile == 1


# --- small and degenerate work on every shipped profile -------------------------------------

SIZES = {"fp64": 8, "fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}
SHAPED_CLASSES = ("matmul", "conv", "attention", "softmax", "layernorm", "rmsnorm")
PLAIN_CLASSES = ("elementwise", "reduction", "gather", "copy", "norm", "unheard_of_op")
TINY = 8  # dimensions up to this make an op tiny on every profile (test-asic: 1 TFLOP/s)


def shaped_cost(op_class: str, dims: list[int], size: int):
    """flops, bytes and shape of a consistent op of this class from a few dimensions."""
    a, b, c, d = dims
    if op_class in ("matmul", "conv"):
        return 2 * a * b * c, (a * c + c * b + a * b) * size, (a, b, c)
    if op_class == "attention":
        return 4 * a * b * c * d, 4 * a * b * d * size, (a, b, c, d)
    return 5 * a * b, 2 * a * b * size, (a, b)


def supported(profile, op_class: str, dtype: str) -> bool:
    unit = "matrix" if op_class in ("matmul", "conv", "attention") else "vector"
    return profile.peak_flops[unit][dtype] > 0


def small_op_cases():
    from hypothesis import strategies as st

    return st.tuples(
        st.sampled_from(kpt.sim.profiles()),
        st.sampled_from(SHAPED_CLASSES + PLAIN_CLASSES),
        st.sampled_from(sorted(SIZES)),
        st.one_of(
            st.lists(st.integers(0, TINY), min_size=4, max_size=4),
            st.lists(st.integers(0, 64), min_size=4, max_size=4),
        ),
    )


def _check_small_op(case):
    name, op_class, dtype, dims = case
    p = load_profile(name)
    if not supported(p, op_class, dtype):
        return
    flops, nbytes, shape = shaped_cost(op_class, dims, SIZES[dtype])
    if op_class in PLAIN_CLASSES:
        shape = None
    t = op_time(p, op_class, flops, nbytes, dtype, shape)
    launch = p.kernel_launch_s
    fixed = launch + p.efficiency_for(normalize_class(op_class)).fixed_s.get(dtype, 0.0)
    where = f"{name} {op_class} {dtype} dims={dims}: {t * 1e6:.3f} us"
    assert t == t and t < float("inf"), where
    assert t >= fixed > 0, where
    if max(dims) <= TINY:  # tiny work is bound by its latencies: a few launches, not seconds
        assert t <= fixed + 4 * launch, where
    # More of the same work never takes less time, unless it is another kernel: a conv's
    # shape is per group, so twice its FLOPs are two groups, which run the direct kernel.
    if (
        op_class == "conv"
        and shape
        and conv_groups(flops, shape) <= 1.5 < conv_groups(2 * flops, shape)
    ):
        return
    assert op_time(p, op_class, 2 * flops, 2 * nbytes, dtype, shape) >= t, where


def test_small_ops_cost_about_a_launch_on_every_profile():
    from hypothesis import given, settings

    settings(max_examples=400, deadline=None, derandomize=True)(
        given(small_op_cases())(_check_small_op)
    )()


def test_a_4x4x4_fp32_matmul_costs_microseconds_not_seconds():
    for name in kpt.sim.profiles():
        p = load_profile(name)
        for op_class, shape in (("matmul", (4, 4, 4)), ("conv", (4, 4, 4, 1))):
            t = op_time(p, op_class, 128, 192, "fp32", shape)
            assert t < 20 * US, (name, op_class, t)
        t = op_time(p, "attention", 4 * 4 * 4 * 4, 192, "fp32", (1, 4, 4, 4))
        assert t < 20 * US, (name, "attention", t)


@pytest.mark.parametrize("name", kpt.sim.profiles())
@pytest.mark.parametrize("op_class", SHAPED_CLASSES)
def test_growing_a_dimension_never_makes_an_op_much_cheaper(name, op_class):
    """Monotone-ish: doubling one dimension of an aligned op may gain from better tiling
    (the wave model), but never makes the op more than 20% cheaper."""
    import random

    p = load_profile(name)
    rng = random.Random(f"{name}/{op_class}")
    for dtype in sorted(SIZES):
        if not supported(p, op_class, dtype):
            continue
        for _ in range(40):
            dims = [16 * rng.randint(1, 64) for _ in range(4)]
            before = op_time(p, op_class, *shaped_cost(op_class, dims, SIZES[dtype])[:2],
                             dtype, shaped_cost(op_class, dims, SIZES[dtype])[2])  # fmt: skip
            for i in range(4):
                grown = list(dims)
                grown[i] *= 2
                f, b, s = shaped_cost(op_class, grown, SIZES[dtype])
                start = shaped_cost(op_class, dims, SIZES[dtype])[2]
                if op_class == "softmax" and warp_per_row(s, dtype) != warp_per_row(start, dtype):
                    continue  # another kernel (measured: bf16 64 x 2048 13.6 us, x 4096 6.0)
                after = op_time(p, op_class, f, b, dtype, s)
                assert after >= 0.8 * before, (dtype, dims, grown, before, after)


def test_shape_hints_of_the_wrong_form_are_refused_by_name():
    p = load_profile("h100-sxm")
    with pytest.raises(InvalidRequestError, match=r"\(M, N, K\[, row alignment in bytes"):
        op_time(p, "matmul", 128, 192, "fp32", (4, 4))
    with pytest.raises(InvalidRequestError, match="rows, cols"):
        op_time(p, "softmax", 128, 192, "fp32", (4, 4, 4))
    with pytest.raises(InvalidRequestError, match="-1"):
        op_time(p, "matmul", 128, 192, "fp32", (4, -1, 4))
    with pytest.raises(InvalidRequestError, match="finite"):
        op_time(p, "matmul", float("nan"), 192, "fp32")
    # Classes that read no shape accept any hint of non-negative integers.
    assert op_time(p, "elementwise", 16, 64, "fp32", (2, 2, 2, 2)) > 0


def test_an_int8_weight_gemm_has_its_own_efficiency_else_matmuls():
    """kpt-serve's Triton int8 GEMM, fitted on an H200: cheaper than bf16 weights, dearer than
    cuBLAS would be over the same bytes. A profile without the table costs it as a matmul."""
    n = k = 4096
    int8 = ("matmul_int8w", 2.0 * n * k, n * k + 4.0 * k, "bf16", (1, n, k))
    same_bytes = ("matmul", *int8[1:])
    bf16 = ("matmul", 2.0 * n * k, 2.0 * n * k + 4.0 * k, "bf16", (1, n, k))
    h200, mi300x = load_profile("h200"), load_profile("mi300x")
    assert op_time(h200, *same_bytes) < op_time(h200, *int8) < op_time(h200, *bf16)
    assert op_time(mi300x, *int8) == op_time(mi300x, *same_bytes)
    with pytest.raises(InvalidRequestError, match=r"\(M, N, K\)"):
        op_time(h200, "matmul_int8w", 1.0, 1.0, "bf16", (1, n))
