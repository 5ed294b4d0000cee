"""GradScaler's ops and a few others run on the device as decompositions, not on the CPU."""

import pytest
import torch

import kpt.adapters.sim as ks


def _scaler_steps(device: str, poison_step: int) -> tuple[list[float], list[torch.Tensor]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**4, growth_interval=2)
    scales = []
    for step in range(5):
        x = torch.randn(4, 6).to(device)
        loss = model(x).pow(2).sum()
        if step == poison_step:
            loss = loss * float("inf")
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scales.append(scaler.get_scale())
    return scales, [p.detach().cpu() for p in model.parameters()]


def test_grad_scaler_runs_on_the_device_and_matches_the_cpu(sim):
    ks.reset_fallback_report()
    scales, params = _scaler_steps("kpt_sim", poison_step=2)
    report = ks.fallback_report()
    assert not [op for op in report if op.startswith("aten::_amp")], report
    expected_scales, expected = _scaler_steps("cpu", poison_step=2)
    assert scales == expected_scales  # grows after 2 clean steps, backs off after the inf
    assert scales[2] < scales[1]
    for got, want in zip(params, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("invert", [False, True])
def test_isin_is_decomposed(sim, invert):
    ks.reset_fallback_report()
    elements, tests = torch.tensor([1, 5, 7, 2, 9]), torch.tensor([2, 7])
    got = torch.isin(elements.to("kpt_sim"), tests.to("kpt_sim"), invert=invert)
    assert torch.equal(got.cpu(), torch.isin(elements, tests, invert=invert))
    assert "aten::isin.Tensor_Tensor" not in ks.fallback_report()


def test_grid_sample_is_decomposed(sim):
    ks.reset_fallback_report()
    torch.manual_seed(0)
    image, grid = torch.randn(1, 2, 5, 5), torch.rand(1, 3, 3, 2) * 2 - 1
    got = torch.nn.functional.grid_sample(
        image.to("kpt_sim"), grid.to("kpt_sim"), align_corners=False
    )
    torch.testing.assert_close(
        got.cpu(), torch.nn.functional.grid_sample(image, grid, align_corners=False)
    )
    assert not [op for op in ks.fallback_report() if "grid_sampler" in op]


def test_composite_ops_without_autograd_run_as_what_they_are_made_of(sim):
    # Under inference_mode composite ops reach the device's dispatch undecomposed: `to` was
    # planned as a bit-reinterpreting view ([True, False] -> [1.4e-45, 0.0]).
    flags = torch.tensor([True, False])
    values = torch.arange(6.0).view(2, 3)
    weight = torch.randn(4, 3)
    ks.reset_fallback_report()
    with torch.inference_mode():
        assert torch.equal(flags.to("kpt_sim").to(torch.float32).cpu(), torch.tensor([1.0, 0.0]))
        half = values.to("kpt_sim").to(torch.float16)
        assert torch.equal(half.cpu(), values.half())
        transposed = values.to("kpt_sim").t().reshape(6)  # needs a copy, not a view
        assert torch.equal(transposed.cpu(), values.t().reshape(6))
        out = torch.nn.functional.linear(values.to("kpt_sim"), weight.to("kpt_sim"))
        torch.testing.assert_close(out.cpu(), torch.nn.functional.linear(values, weight))
    assert not [op for op in ks.fallback_report() if "linear" in op or "matmul" in op]


def test_a_cost_the_client_cannot_estimate_is_counted_not_silent(sim, monkeypatch):
    from kpt.adapters.sim import _plan

    def broken(op, inputs, outputs, attrs):
        raise ValueError(f"no formula reads {op}")

    monkeypatch.setattr(_plan, "launch_cost", broken)  # the client's cost function
    ks.reset_fallback_report()
    x = torch.arange(12.0, device="kpt_sim").view(3, 4)
    with pytest.warns(ks.SimFallbackWarning, match="cost not estimated"):
        y = torch.special.erfcx(x[:, :3] + 0.25)  # a signature no earlier test planned
    assert torch.allclose(y.cpu(), torch.special.erfcx(torch.arange(12.0).view(3, 4)[:, :3] + 0.25))
    report = ks.estimate_failure_report()
    assert report and all("no formula reads" in entry["reason"] for entry in report.values())
    assert not [op for op in ks.fallback_report() if "add" in op]  # not a CPU fallback
