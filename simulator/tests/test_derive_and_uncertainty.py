"""`kpt-sim profile derive` (the shipped h200 is its output) and prediction intervals."""

from __future__ import annotations

import re
import tomllib
from importlib import resources

import pytest

from kpt.sim import InvalidRequestError, OpCost, Simulator, load_profile, op_time, replay
from kpt.sim._cli import main
from kpt.sim._derive import Datasheet, derive_profile
from kpt.sim._profiles import profile_from_dict
from kpt.sim._uncertainty import interval

H200_SHEET = Datasheet(hbm_bandwidth_gbps=4800, hbm_capacity_gib=141, model="H200 SXM 141GB")


def test_the_shipped_h200_is_what_derive_writes():
    """Plus the [host] table: host time per launch source of the host that drove the H200,
    fitted by calibration/host_model_fit.py (the chip's datasheet cannot say it)."""
    shipped = (resources.files("kpt.sim") / "profiles/h200.toml").read_text()
    chip = re.sub(r"(?ms)^\[host(\.[a-z_]+)?\].*?\n\n", "", shipped)
    assert chip != shipped
    assert derive_profile("h100-sxm", H200_SHEET) == chip


def test_derive_scales_memory_by_the_datasheets_and_keeps_compute():
    h100, h200 = load_profile("h100-sxm"), load_profile("h200")
    ratio = 4800 / 3350
    assert h200.hbm_bandwidth == pytest.approx(h100.hbm_bandwidth * ratio, rel=1e-5)
    assert h200.hbm_bytes == 141 << 30 and not h200.calibrated
    assert h200.derived_from == "h100-sxm" and h200.peak_flops == h100.peak_flops
    big_copy = ("copy", 0.0, 2e9)  # bandwidth-bound: faster by the datasheet ratio
    assert op_time(h100, *big_copy) / op_time(h200, *big_copy) == pytest.approx(ratio, rel=0.01)
    gemm = ("matmul", 2 * 8192**3, 3 * 8192**2 * 2, "bf16", (8192, 8192, 8192))
    assert op_time(h200, *gemm) == pytest.approx(op_time(h100, *gemm), rel=1e-6)
    # A kernel's memory start-up keeps its seconds: x_half scales with the bandwidth.
    for cls in ("elementwise", "softmax"):
        a, b = h100.efficiency_for(cls), h200.efficiency_for(cls)
        assert b.memory_x_half / h200.hbm_bandwidth == pytest.approx(
            a.memory_x_half / h100.hbm_bandwidth, rel=1e-5
        )
    a, b = h100.efficiency_for("matmul"), h200.efficiency_for("matmul")  # the skinny curve's too
    assert b.skinny_memory_x_half == pytest.approx(a.skinny_memory_x_half * ratio, rel=1e-5)
    assert a.skinny_memory_x_half > 0 and b.skinny_rows == a.skinny_rows > 0


def test_the_cli_derives_a_loadable_profile(tmp_path, capsys):
    out = tmp_path / "my-chip.toml"
    argv = ["profile", "derive", "--from", "h100-sxm", "--hbm-bandwidth", "6000",
            "--compute-scale", "2", "--model", "My Chip", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    chip = load_profile(str(out))
    h100 = load_profile("h100-sxm")
    assert chip.model == "My Chip" and "efficiencies from h100-sxm" in capsys.readouterr().out
    assert chip.peak_flops["matrix"]["bf16"] == pytest.approx(2 * h100.peak_flops["matrix"]["bf16"])
    # a dtype's own table scales as its class does (fp32 attention's memory-efficient kernel)
    fp32, base = (p.efficiency_for("attention").for_dtype("fp32") for p in (chip, h100))
    assert fp32.class_flops == pytest.approx(2 * base.class_flops) and base.class_flops > 0
    assert fp32.memory_x_half == pytest.approx(base.memory_x_half * 6000 / 3350, rel=1e-5)
    assert Simulator(str(out)).launch(0, OpCost("matmul", 1e9, 0)) > 0


def test_a_slower_host_scales_every_host_figure_and_nothing_else(tmp_path):
    out = tmp_path / "slow-host.toml"
    argv = ["profile", "derive", "--from", "h200", "--hbm-bandwidth", "4800",
            "--host-scale", "1.5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    slow, h200 = load_profile(str(out)), load_profile("h200")
    assert slow.host_issue_s == pytest.approx(1.5 * h200.host_issue_s)
    assert slow.host is not None and h200.host is not None
    assert slow.host.forward_s == pytest.approx(1.5 * h200.host.forward_s)
    classes = dict(h200.host.forward_class_s)
    # derive writes six significant digits
    assert {k: v / 1.5 for k, v in slow.host.forward_class_s} == pytest.approx(classes, rel=1e-5)
    assert classes
    gemm = ("matmul", 2 * 4096**3, 3 * 4096**2 * 2, "bf16", (4096, 4096, 4096))
    assert op_time(slow, *gemm) == pytest.approx(op_time(h200, *gemm), rel=1e-6)
    with pytest.raises(InvalidRequestError, match="host scale"):
        derive_profile("h200", Datasheet(4800, host_scale=0))


def test_derive_errors_say_what_to_pass(tmp_path, capsys):
    base = tmp_path / "base.toml"
    text = (resources.files("kpt.sim") / "profiles/test-asic.toml").read_text()
    base.write_text(text)
    with pytest.raises(InvalidRequestError, match="--base-hbm-datasheet"):
        derive_profile(str(base), Datasheet(hbm_bandwidth_gbps=200))
    derived = derive_profile(str(base), Datasheet(200, base_hbm_datasheet_gbps=100))
    assert tomllib.loads(derived)["hbm"]["bandwidth_gbps"] == pytest.approx(200)
    with pytest.raises(InvalidRequestError, match="profile 'h300' not found"):
        derive_profile("h300", H200_SHEET)
    assert main(["profile", "derive", "--from", "h100-sxm", "--hbm-bandwidth", "1",
                 "--out", str(tmp_path / "x.json")]) != 0  # fmt: skip
    assert "must end in .toml" in capsys.readouterr().err


def test_a_kernel_interval_is_its_class_band():
    h100 = load_profile("h100-sxm")
    cost = OpCost("matmul", 2 * 4096**3, 3 * 4096**2 * 2, "bf16", (4096, 4096, 4096))
    low, predicted, high = interval("h100-sxm", cost)
    lo, hi = h100.uncertainty["matmul"]
    assert predicted == pytest.approx(op_time(h100, *cost))
    assert (low, high) == pytest.approx((predicted * lo, predicted * hi))
    assert low < predicted < high
    # A class without a band of its own takes the profile's default; uncalibrated: none.
    assert interval("h100-sxm", OpCost("gather", 0, 1e6))[0] < op_time(h100, "gather", 0, 1e6)
    flat = interval("test-asic", OpCost("matmul", 1e6, 0))
    assert flat.low == flat.predicted == flat.high


def test_a_step_interval_widens_each_class_by_its_band():
    h100 = load_profile("h100-sxm")
    sim = Simulator("h100-sxm", trace=False)
    mm = OpCost("matmul", 2 * 4096**3, 3 * 4096**2 * 2, "bf16", (4096, 4096, 4096))
    add = OpCost("elementwise", 4096**2, 3 * 4096**2 * 2, "bf16")
    for _ in range(10):
        sim.launch(0, mm)
        sim.launch(0, add)
    end = sim.synchronize()
    busy = sim.summary()[0]["busy_by_class"]
    low, predicted, high = sim.interval()
    assert predicted == pytest.approx(end)
    (mlo, mhi), (elo, ehi) = h100.uncertainty["matmul"], h100.uncertainty["elementwise"]
    below = busy["matmul"] * (1 - mlo) + busy["elementwise"] * (1 - elo)
    above = busy["matmul"] * (mhi - 1) + busy["elementwise"] * (ehi - 1)
    assert (low, high) == pytest.approx((end - below, end + above))
    ops = [{"op": "launch", "device": 0, "class": "matmul", "flops": 1e12, "bytes": 1e6}]
    summary = replay({"profile": "h100-sxm", "ops": ops})
    lo, hi = summary["interval_s"]
    assert lo < summary["predicted_s"] < hi


def test_bad_uncertainty_bands_are_refused_by_name():
    text = (resources.files("kpt.sim") / "profiles/test-asic.toml").read_text()
    data = tomllib.loads(text)
    with pytest.raises(InvalidRequestError, match=r"uncertainty.matmul.*\[low, high\]"):
        profile_from_dict("bad", {**data, "uncertainty": {"matmul": [1.2, 1.5]}})
