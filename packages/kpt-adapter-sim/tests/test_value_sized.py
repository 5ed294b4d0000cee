"""Ops sized by their values run on the device (one sync for the size), not on the CPU (issue 13).

nonzero, boolean-mask indexing, masked_select, unique, bincount, and embedding_bag's sum and mean
modes: same results as the CPU, nothing in fallback_report().
"""

import pytest
import torch
import torch.nn.functional as F

import kpt.adapters.sim as ks


def _same(expected, got):
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(expected) == len(got)
    for e, g in zip(expected, got, strict=True):
        assert g.device.type == "kpt_sim"
        assert e.dtype == g.dtype and e.shape == g.shape
        assert torch.equal(e, g.cpu()), (e, g.cpu())


CASES = {
    "nonzero": lambda x, m: torch.nonzero(x > 0),
    "nonzero of a scalar": lambda x, m: torch.nonzero(x[0, 0] > -100),
    "nonzero of nothing": lambda x, m: torch.nonzero(x > 100),
    "argwhere 3-d": lambda x, m: torch.argwhere(x.reshape(2, 2, 5) > 0),
    "x[mask]": lambda x, m: x[m],
    "x[row_mask]": lambda x, m: x[m[:, 0]],
    "x[row_mask, 1:3]": lambda x, m: x[m[:, 0], 1:3],
    "x[mask] = 1": lambda x, m: x.clone().index_put_((m,), torch.ones((), device=x.device)),
    "masked_select": lambda x, m: torch.masked_select(x, m[:, :1]),
    "unique": lambda x, m: torch.unique((x * 2).round(), return_inverse=True, return_counts=True),
    "unique of ints": lambda x, m: torch.unique((x * 2).round().long(), return_counts=True),
    "unique of nothing": lambda x, m: torch.unique(x[:0], return_inverse=True),
    "bincount": lambda x, m: torch.bincount((x.abs() * 3).long().flatten()),
    "bincount weighted": lambda x, m: torch.bincount(
        (x.abs() * 3).long().flatten(), weights=x.flatten(), minlength=20
    ),
    "isin": lambda x, m: torch.isin((x * 2).round(), torch.tensor([0.0, 1.0], device=x.device)),
    "embedding_bag mean": lambda x, m: F.embedding_bag(
        torch.tensor([0, 2, 1, 3], device=x.device), x, torch.tensor([0, 2], device=x.device)
    ),
    "embedding_bag sum, empty bag": lambda x, m: F.embedding_bag(
        torch.tensor([0, 2, 1, 3, 3], device=x.device),
        x,
        torch.tensor([0, 2, 2], device=x.device),
        mode="sum",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_runs_on_the_device_with_the_cpus_values(sim, name):
    torch.manual_seed(0)
    x = torch.randn(4, 5)
    mask = x > 0
    expected = CASES[name](x, mask)
    ks.reset_fallback_report()
    got = CASES[name](x.to("kpt_sim"), mask.to("kpt_sim"))
    _same(expected, got)
    assert ks.fallback_report() == {}


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_embedding_bag_trains_like_the_cpu(sim, mode):
    torch.manual_seed(0)
    indices, offsets = torch.tensor([0, 2, 1, 3, 3, 5]), torch.tensor([0, 2, 5])
    grads = []
    ks.reset_fallback_report()
    for device in ("cpu", "kpt_sim"):
        bag = torch.nn.EmbeddingBag(6, 3, mode=mode)
        bag.weight.data = torch.arange(18.0).reshape(6, 3) / 7
        bag = bag.to(device)
        out = bag(indices.to(device), offsets.to(device))
        (out * torch.arange(9.0).reshape(3, 3).to(device)).sum().backward()
        grads.append((out.detach().cpu(), bag.weight.grad.cpu()))
    assert ks.fallback_report() == {}
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_max_mode_embedding_bag_still_runs_and_says_so(sim):
    weight = torch.randn(6, 3)
    args = (torch.tensor([0, 2, 1, 3]), weight, torch.tensor([0, 2]))
    ks.reset_fallback_report()
    got = F.embedding_bag(*(a.to("kpt_sim") for a in args), mode="max")
    assert torch.equal(got.cpu(), F.embedding_bag(*args, mode="max"))
    assert "aten::_embedding_bag_forward_only.default" in ks.fallback_report()


def test_a_negative_bincount_input_is_refused_with_the_value(sim):
    with pytest.raises(RuntimeError, match="smallest value is -2"):
        torch.bincount(torch.tensor([1, -2, 3], device="kpt_sim"))
