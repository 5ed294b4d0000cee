"""The hot path's shortcuts keep semantics: cached plans, per-call floats, async uploads/allocs."""

from __future__ import annotations

import torch

from kpt.adapters.sim._runtime import runtime


def test_a_cached_plan_still_tells_same_tensor_from_equal_tensor(sim):
    a_host, b_host = torch.randn(4, 4), torch.randn(4, 4)
    a, b = a_host.to("kpt_sim"), b_host.to("kpt_sim")
    torch.testing.assert_close((a + a).cpu(), a_host + a_host)  # plan for (x, x)
    torch.testing.assert_close((a + b).cpu(), a_host + b_host)  # same metadata, two tensors
    torch.testing.assert_close((b + b).cpu(), b_host + b_host)


def test_float_arguments_are_sent_per_call_not_cached(sim):
    x_host = torch.ones(3)
    x = x_host.to("kpt_sim")
    for alpha in (2.0, 3.0, -0.5):  # one plan, three values
        torch.testing.assert_close(torch.add(x, x, alpha=alpha).cpu(), x_host * (1 + alpha))
    y = torch.zeros(3, device="kpt_sim")
    for value in (1.5, 7.0):
        y.fill_(value)
        torch.testing.assert_close(y.cpu(), torch.full((3,), value))


def test_plans_are_reused_across_calls(sim):
    x = torch.randn(5, 7, device="kpt_sim")
    (x * x).sum()
    plans = runtime().plans.plans  # the Runtime's PlanCache
    before = len(plans)
    for _ in range(20):
        (x * x).sum()
    assert len(plans) == before


def test_an_upload_is_a_copy_even_when_sent_without_waiting(sim):
    host = torch.arange(6.0)
    device = host.to("kpt_sim")
    host.fill_(-1)  # changed right after the (asynchronous) upload
    torch.testing.assert_close(device.cpu(), torch.arange(6.0))


def test_views_and_in_place_ops_through_plans(sim):
    host = torch.randn(6, 4)
    x = host.to("kpt_sim")
    x.t()[1].mul_(10)  # an in-place op on a view of a view
    host.t()[1].mul_(10)
    torch.testing.assert_close(x.cpu(), host)
    halves = x.split(3)  # a Tensor[] view return
    torch.testing.assert_close(halves[1].cpu(), host[3:])


def test_ops_with_an_out_overload_compute_into_their_buffer(sim):
    a_host, b_host = torch.randn(3, 5), torch.randn(5, 2)
    a, b = a_host.to("kpt_sim"), b_host.to("kpt_sim")
    torch.testing.assert_close((a @ b).cpu(), a_host @ b_host)
    torch.testing.assert_close(torch.add(a, a, alpha=2.5).cpu(), a_host * 3.5)  # floats + out=
    x = a.clone().requires_grad_()
    torch.nn.functional.gelu(x).sum().backward()  # gelu_backward's output keyword: grad_input
    reference = a_host.clone().requires_grad_()
    torch.nn.functional.gelu(reference).sum().backward()
    torch.testing.assert_close(x.grad.cpu(), reference.grad)
    launched = {p.op for p in runtime().plans.plans.values() if not isinstance(p, str)}
    assert {"aten::mm.out", "aten::add.out", "aten::gelu_backward.grad_input"} <= launched
