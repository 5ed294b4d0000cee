import pytest

from kpt.sim import InvalidRequestError, efficiency, load_profile, op_time, shape_penalty

US = 1e-6


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
