"""split_batch and the batch-weighted gradient: arithmetic checked by hand."""

from __future__ import annotations

import pytest
import torch

from kpt.collectives import batch_weighted_hook, split_batch


def test_split_batch_is_proportional_to_throughput_and_sums_to_the_global_batch():
    assert split_batch(64, [3, 1]) == [48, 16]
    assert split_batch(12, [989.4e12, 1307.4e12]) == [5, 7]  # h100-sxm, mi300x bf16 peaks
    assert split_batch(10, [1, 1, 1]) == [4, 3, 3]  # the leftover goes to a largest remainder
    assert sum(split_batch(1001, [7.3, 2.1, 0.4])) == 1001


def test_every_rank_gets_a_sample_when_there_are_enough():
    assert split_batch(4, [1000, 1, 1]) == [2, 1, 1]
    assert split_batch(1, [1, 1]) in ([1, 0], [0, 1])


def test_throughputs_may_be_objects_or_dicts():
    class Rank:
        throughput = 2.0

    assert split_batch(6, [Rank(), {"throughput": 1.0}]) == [4, 2]


@pytest.mark.parametrize("bad", [[0, 1], [-1, 2], [float("nan"), 1], ["fast", 1], []])
def test_bad_throughputs_are_refused_with_the_rank_named(bad):
    with pytest.raises(ValueError, match=r"rank|at least one"):
        split_batch(8, bad)


def test_weighting_by_batch_share_gives_the_global_mean_gradient():
    """sum_r (b_r / B) * mean-gradient over rank r's batch == mean-gradient over all B."""
    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    x = torch.randn(10, 3)
    (x @ w).pow(2).mean().backward()
    whole = w.grad.clone()
    sizes, parts = split_batch(10, [2.0, 3.0]), []
    start = 0
    for size in sizes:
        w.grad = None
        (x[start : start + size] @ w).pow(2).mean().backward()
        parts.append(w.grad * size / 10)
        start += size
    torch.testing.assert_close(sum(parts), whole)


def test_the_hook_has_the_signature_ddp_accepts():
    import inspect

    params = inspect.signature(batch_weighted_hook).parameters
    assert list(params) == ["weight", "bucket"]
    assert params["bucket"].annotation is inspect.Parameter.empty
