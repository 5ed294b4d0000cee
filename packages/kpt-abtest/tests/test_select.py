"""Exact order statistics by bracketing must equal a full sort on any data shape."""

import numpy as np
import pytest

from kpt.abtest._quantiles import quantiles_with_se
from kpt.abtest._select import select_ranks

N = 600_000  # above the size where bracketing replaces np.partition


def _cases(rng):
    yield "lognormal", rng.lognormal(0, 1, N)
    yield "sorted", np.sort(rng.normal(size=N))
    yield "reversed", np.sort(rng.normal(size=N))[::-1].copy()
    yield "few ties", np.round(rng.normal(size=N), 2)
    yield "three values", rng.integers(0, 3, N).astype(np.float64)
    yield "constant", np.full(N, 7.0)


@pytest.mark.parametrize("case", range(6))
def test_select_ranks_matches_sort(case):
    rng = np.random.default_rng(case)
    name, x = list(_cases(rng))[case]
    ranks = np.array([0, 1, N // 2 - 300, N // 2, N // 2 + 7, int(0.99 * N), N - 2, N - 1])
    expected = np.sort(x)[ranks]
    got = select_ranks(x, rng.permutation(ranks))
    assert np.array_equal(np.sort(got), np.sort(expected)), name
    got_in_order = select_ranks(x, ranks)
    assert np.array_equal(got_in_order, expected), name


def test_quantiles_with_se_agrees_with_numpy_on_large_samples():
    x = np.random.default_rng(3).pareto(3.0, N)
    est, se = quantiles_with_se(x, [0.5, 0.95, 0.99])
    assert np.allclose(est, np.quantile(x, [0.5, 0.95, 0.99]), rtol=0, atol=0)
    assert (se > 0).all()
    # The batched (2-D) path uses np.partition; the 1-D path must give the same numbers.
    est2, se2 = quantiles_with_se(x[None, :], [0.5, 0.95, 0.99])
    assert np.array_equal(est2[0], est) and np.array_equal(se2[0], se)


def test_a_missed_bracket_falls_back_to_an_exact_answer(monkeypatch):
    import kpt.abtest._select as select

    monkeypatch.setattr(select, "_MARGIN_SDS", 0.0)  # brackets too narrow: most will miss
    x = np.random.default_rng(9).normal(size=N)
    ranks = np.array([N // 3, N // 2, int(0.97 * N)])
    assert np.array_equal(select.select_ranks(x, ranks), np.sort(x)[ranks])
