"""Sketch-based quantiles are marked approximate, with their rank-error bound."""

import numpy as np

from kpt.abtest import Summary, rank_error_bound, to_markdown
from kpt.abtest._distributed import _describe
from kpt.abtest._monitor import render_status


def test_quantiles_are_exact_until_the_sketch_compacts_then_carry_the_bound():
    rng = np.random.default_rng(0)
    small = Summary().update(rng.normal(size=100))
    assert small.sketch.exact and small.quantile_rank_error == 0.0
    big = Summary().update(rng.lognormal(size=200_000))
    assert not big.sketch.exact
    assert big.quantile_rank_error == rank_error_bound(200) == rank_error_bound(big.sketch.k)
    # the bound holds: each reported quantile's true rank lies within it
    values = np.sort(rng.lognormal(size=200_000))
    summary = Summary().update(values[rng.permutation(values.size)])
    for q in (0.5, 0.95, 0.99):
        rank = np.searchsorted(values, summary.quantile(q), side="right") / values.size
        assert abs(rank - q) <= summary.quantile_rank_error


def test_status_monitor_and_markdown_mark_approximate_quantiles():
    rng = np.random.default_rng(1)
    arms = {"a": _describe(Summary().update(rng.normal(size=50_000))),
            "b": _describe(Summary().update(rng.normal(size=50)))}  # fmt: skip
    assert arms["a"]["quantiles"] == "approximate (KLL sketch)"
    assert arms["b"]["quantiles"] == "exact" and arms["b"]["quantile_rank_error"] == 0.0
    status = {"arms": arms, "baseline": "a", "alpha": 0.05, "protocol": "kpt-abtest/2"}
    note = f"within +-{100 * rank_error_bound(200):.3g} points (rank error bound, 99% confidence)"
    assert "approximate, from KLL sketches" in render_status(status) and note in render_status(
        status
    )
    assert note in to_markdown(status)
    exact = {"arms": {"b": arms["b"]}, "protocol": "kpt-abtest/2"}
    assert "p50/p95/p99: exact" in render_status(exact)
