"""Autocast on kpt_sim uses CUDA's policy: lower precision, float32, and promote lists."""

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture
def inputs(sim):
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    w = torch.randn(10, 16)
    target = torch.randint(0, 10, (8,))
    return x, w, target


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lists_decide_each_ops_dtype(inputs, dtype):
    x, w, target = (t.to("kpt_sim") for t in inputs)
    with torch.autocast("kpt_sim", dtype=dtype):
        logits = F.linear(x, w)
        assert logits.dtype == dtype and (x @ w.t()).dtype == dtype  # lower precision
        assert F.softmax(logits, -1).dtype == torch.float32  # float32 unless dtype given
        assert F.log_softmax(logits, -1).dtype == torch.float32
        assert F.softmax(logits, -1, dtype=torch.float64).dtype == torch.float64
        assert logits.sum().dtype == torch.float32 and logits.exp().dtype == torch.float32
        assert F.layer_norm(logits, (10,)).dtype == torch.float32  # float32
        assert F.cross_entropy(logits, target).dtype == torch.float32
        assert F.mse_loss(logits, torch.zeros_like(logits)).dtype == torch.float32
        assert torch.norm(logits).dtype == torch.float32
        assert torch.addcmul(x, logits[:, :1], x).dtype == torch.float32  # promote
        assert (logits + 1).dtype == dtype  # not listed: runs in what it is given


def test_bf16_loss_is_what_cudas_policy_computes(inputs):
    # Under CUDA's policy linear runs in bf16, cross_entropy's log_softmax keeps the bf16 it is
    # asked for (an explicit dtype), and nll_loss runs in float32. (CPU autocast lists
    # cross_entropy itself as float32, so it differs from CUDA by design.)
    x, w, target = inputs
    logits = F.linear(x.bfloat16(), w.bfloat16())
    expected = F.nll_loss(F.log_softmax(logits, -1, dtype=torch.bfloat16).float(), target)
    with torch.autocast("kpt_sim", dtype=torch.bfloat16):
        got = F.cross_entropy(F.linear(x.to("kpt_sim"), w.to("kpt_sim")), target.to("kpt_sim"))
        probabilities = F.softmax(F.linear(x.to("kpt_sim"), w.to("kpt_sim")), -1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(probabilities.cpu(), F.softmax(logits.float(), -1))
