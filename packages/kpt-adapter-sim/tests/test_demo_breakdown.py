"""The demo's explanation comes from the simulator's figures, not from a fixed sentence.

Offline replays of hand-written op traces show both verdicts (launch-bound and chip-bound);
a short run of the demo itself checks the trace's lanes, the A/B progress and the plots.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpt.adapters.sim.demo_breakdown import StepBreakdown, breakdown, explain, measured_step


def _trace(path: Path, launches: int, flops: float, nbytes: float, name: str, kind: str) -> Path:
    op = {"op": "launch", "device": 0, "class": kind, "flops": flops, "bytes": nbytes,
          "name": name}  # fmt: skip
    doc = {"format": "kpt-sim-ops", "version": 1, "profile": "h100-sxm", "devices": 1,
           "ops": [dict(op) for _ in range(launches)] + [{"op": "sync"}]}  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def test_many_small_ops_are_launch_bound(tmp_path):
    path = _trace(tmp_path / "small.json", launches=100, flops=1e3, nbytes=1e3, name="tiny",
                  kind="elementwise")  # fmt: skip
    row = breakdown(path, "h100-sxm", steps=2)
    assert row.launches == 50
    assert row.chip_share < 0.2  # the chip waits for the host almost all the step
    assert row.bound == "launch-bound"
    assert row.us_per_op == pytest.approx(row.step_ms * 1e3 / 50)
    assert row.op_counts == {"tiny": 50}


def test_few_large_ops_are_chip_bound(tmp_path):
    path = _trace(tmp_path / "large.json", launches=4, flops=2e14, nbytes=1e9, name="gemm",
                  kind="matmul")  # fmt: skip
    row = breakdown(path, "h100-sxm", steps=1)
    assert row.chip_share > 0.9
    assert row.bound == "chip-bound"
    assert row.step_ms == pytest.approx(row.chip_busy_ms, rel=0.05)


def _row(step, busy, launches, ops, matmul):
    return StepBreakdown("h100-sxm", step, busy, launches,
                         {"matmul": matmul, "copy": busy - matmul}, ops)  # fmt: skip


def test_explanation_of_a_launch_bound_pair_names_the_extra_ops():
    fp32 = _row(8.6, 1.3, 256, {"aten::mm": 60}, matmul=0.8)
    bf16 = _row(13.0, 1.05, 386, {"aten::mm": 60, "aten::_to_copy": 130}, matmul=0.35)
    text = explain(fp32, bf16, ("fp32", "bf16"))
    assert "+51%, slower" in text
    assert "Both steps are launch-bound" in text
    assert "+130 aten::_to_copy" in text
    assert "matmul -450 us" in text
    assert "386 per step against 256" in text
    assert "one every 33.6 us and 33.7 us" in text


def test_explanation_of_a_chip_bound_pair_says_so():
    fp32 = _row(50.0, 49.0, 100, {"aten::mm": 100}, matmul=45.0)
    bf16 = _row(30.0, 29.0, 120, {"aten::mm": 100, "aten::_to_copy": 20}, matmul=25.0)
    text = explain(fp32, bf16, ("fp32", "bf16"))
    assert "Both steps are chip-bound" in text
    assert "faster" in text and "launch-bound" not in text


def test_measured_steps_are_the_calibration_runs():
    real = measured_step("h100-sxm", "fp32")
    if real is None:
        pytest.skip("simulator/calibration is not here (tests run outside the repository)")
    assert real.gpu == "H100" and real.kernels == 210
    assert real.step_ms == pytest.approx(10.156, abs=1e-3)
    assert real.gpu_busy_ms == pytest.approx(1.358, abs=1e-3)
    assert measured_step("h200", "bf16").gpu == "H200"
    assert measured_step("mi300x", "fp32") is None  # no real MI300X run


@pytest.mark.timeout(600)
def test_short_demo_run_writes_a_lane_per_device_and_explains_bf16(sim, tmp_path, capsys):
    import torch

    from kpt.adapters.sim import demo, demo_precision

    result = demo.main(["--steps", "2", "--timing-steps", "1", "--out", str(tmp_path)])
    lanes = [lane for lane in result["trace_lanes"] if lane.startswith("device ")]
    assert [lane.split()[1] for lane in lanes] == [
        str(i) for i in range(torch.kpt_sim.device_count())
    ]
    assert set(result["replayed"]) >= {"h100-sxm", "h200"}
    assert (tmp_path / "loss.png").exists() and (tmp_path / "checkpoint.pt").exists()

    arms = demo_precision.precision_arms("kpt_sim:0")
    ab = demo_precision.compare_precisions(steps=2, arms=arms)
    assert ab.metric == "loss" and len(ab.samples["bf16"]["loss"]) == 2
    table = demo_precision.explain_precisions(arms, tmp_path, steps=1)
    assert set(table) == {"h100-sxm", "h200"}
    h100 = table["h100-sxm"]
    assert h100["bf16"].op_counts.get("aten::_to_copy.default", 0) > 0  # autocast's casts
    out = capsys.readouterr().out
    assert "on metric 'loss'" in out
    assert "the simulated bf16 autocast step takes" in out
    assert (tmp_path / "chip_busy.png").exists()
