"""The heterogeneous data-parallel job (kpt.collectives.demo): simulated all-reduce times of DDP
steps against the engine's closed form, and the demo's summary arithmetic."""

from __future__ import annotations

import pytest

from kpt.collectives._hetero import HeteroJob, RankReport, run_job
from kpt.collectives.demo import format_summary, summarize


@pytest.mark.timeout(300)
def test_each_ddp_all_reduce_takes_the_simulators_closed_form_time():
    """Two identical chips: every gradient bucket's simulated all-reduce, from the last rank's
    arrival, is within 5 % of the closed form of its plan. (From the first arrival it may hold a
    wait: the daemon has one simulated clock, and a rank that synchronized moves it for both.)"""
    job = HeteroJob(chips=("h100-sxm", "h100-sxm"), width=512, depth=2, global_batch=64,
                    steps=1, limit_s=240)  # fmt: skip
    reports = run_job(job)
    assert [r.batch for r in reports] == [32, 32]
    for report in reports:
        assert report.all_reduces, "no bucket all-reduce was timed"
        for timing in report.all_reduces:
            assert timing["nbytes"] > 0
            predicted, took = timing["predicted"], timing["transfer_time"]
            assert abs(took - predicted) <= 0.05 * predicted, timing
            assert timing["duration"] >= took


def test_the_summary_is_the_pairs_throughput_over_the_sum_of_single_chip_throughputs():
    job = HeteroJob(global_batch=300)
    reports = [RankReport("h100-sxm", alone_step_s=0.3, batch=100, pair_step_s=0.1,
                          alone_share_step_s=0.08),
               RankReport("mi300x", alone_step_s=0.15, batch=200, pair_step_s=0.125,
                          alone_share_step_s=0.1)]  # fmt: skip
    result = summarize(job, reports)
    # singles on the global batch: 1000 + 2000 samples/s; the pair: 300 samples per 0.125 s
    assert result["pair_samples_per_s"] == pytest.approx(2400)
    assert result["efficiency"] == pytest.approx(0.8)
    # singles on their shares: 100 / 0.08 + 200 / 0.1 = 1250 + 2000 samples/s
    assert result["efficiency_same_batch"] == pytest.approx(2400 / 3250)
    assert [c["batch"] for c in result["chips"]] == [100, 200]
    text = format_summary(job, result)
    assert "efficiency (pair / sum of singles): 0.800 on the global batch" in text
    assert "efficiency at the same per-chip batch (weak scaling): 0.738" in text


def test_without_timed_shares_the_same_batch_efficiency_is_absent():
    job = HeteroJob(global_batch=300)
    reports = [RankReport("h100-sxm", 0.3, 100, 0.1), RankReport("mi300x", 0.15, 200, 0.125)]
    result = summarize(job, reports)
    assert result["efficiency_same_batch"] is None
    assert "weak scaling" not in format_summary(job, result)
