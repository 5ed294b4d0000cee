"""Aliasing, in-place ops, async behaviour, RNG, memory, events and fallbacks."""

import pytest
import torch


def test_views_alias_their_base(sim):
    base = torch.zeros(4, 4, device="kpt_sim")
    row = base[1]
    row.add_(1)
    base[:, 2] = 5
    column = base.t()[3]
    column.mul_(0).add_(7)
    expected = torch.zeros(4, 4)
    expected[1] += 1
    expected[:, 2] = 5
    expected[:, 3] = 7
    torch.testing.assert_close(base.cpu(), expected)
    assert row.cpu().tolist() == expected[1].tolist()


def test_in_place_view_ops_change_shape(sim):
    x = torch.arange(6.0, device="kpt_sim").view(2, 3)
    x.transpose_(0, 1)
    x.unsqueeze_(0)
    assert x.shape == (1, 3, 2)
    torch.testing.assert_close(x.cpu(), torch.arange(6.0).view(2, 3).t().unsqueeze(0))


def test_item_and_printing_read_values(sim):
    x = torch.tensor([1.5, 2.5], device="kpt_sim")
    assert x.sum().item() == 4.0
    assert "kpt_sim:0" in repr(x) and "1.5000" in repr(x)


def test_rng_is_reproducible_per_seed(sim):
    torch.kpt_sim.manual_seed(123)
    a = torch.randn(64, device="kpt_sim").cpu()
    torch.kpt_sim.manual_seed(123)
    b = torch.randn(64, device="kpt_sim").cpu()
    c = torch.randn(64, device="kpt_sim").cpu()
    assert torch.equal(a, b) and not torch.equal(b, c)
    state = torch.kpt_sim.get_rng_state()
    d = torch.rand(8, device="kpt_sim").cpu()
    torch.kpt_sim.set_rng_state(state)
    assert torch.equal(d, torch.rand(8, device="kpt_sim").cpu())


def test_out_of_memory_names_sizes(sim):
    _, total = torch.kpt_sim.mem_get_info()
    with pytest.raises(torch.OutOfMemoryError, match="requested") as info:
        torch.empty(total + 1, dtype=torch.uint8, device="kpt_sim")
    assert isinstance(info.value, sim.KptSimOutOfMemoryError)


def test_memory_accounting_follows_tensors(sim):
    before = torch.kpt_sim.memory_allocated()
    x = torch.empty(1 << 20, dtype=torch.uint8, device="kpt_sim")
    assert torch.kpt_sim.memory_allocated() >= before + (1 << 20)
    assert torch.kpt_sim.max_memory_allocated() >= torch.kpt_sim.memory_allocated()
    del x
    assert torch.kpt_sim.memory_allocated() == before


def test_events_measure_simulated_time(sim):
    x = torch.randn(256, 256, device="kpt_sim")
    start, end = torch.kpt_sim.Event(enable_timing=True), torch.kpt_sim.Event(enable_timing=True)
    start.record()
    for _ in range(4):
        x = x @ x
    end.record()
    end.synchronize()
    elapsed = start.elapsed_time(end)
    assert 0 < elapsed < 1000  # milliseconds of simulated time, not wall time


def test_async_error_surfaces_at_synchronize(sim):
    x = torch.ones(4, device="kpt_sim")
    # An op the executor refuses is still queued asynchronously; its error comes at sync.
    rt = sim._runtime.runtime() if hasattr(sim, "_runtime") else None
    from kpt.adapters.sim._runtime import runtime
    from kpt.adapters.sim._transfer import tensor_ref

    runtime().client.launch(0, "aten::not_an_op.default", [tensor_ref(x)], [], {})
    del rt
    with pytest.raises(sim.KptSimError, match="not_an_op"):
        torch.kpt_sim.synchronize()
    assert x.sum().item() == 4.0  # the device keeps working afterwards


def test_unsupported_op_falls_back_and_is_counted(sim):
    sim.reset_fallback_report()
    x = torch.tensor([0.0, 1.0, 0.0, 2.0], device="kpt_sim")
    with pytest.warns(sim.SimFallbackWarning, match="erfcx"):
        y = torch.special.erfcx(x)  # not in the torch executor's allow-list
    assert y.device.type == "kpt_sim"
    assert torch.equal(y.cpu(), torch.special.erfcx(torch.tensor([0.0, 1.0, 0.0, 2.0])))
    assert sim.fallback_report()["aten::special_erfcx.default"]["count"] == 1


def test_nonzero_runs_on_the_device(sim):
    sim.reset_fallback_report()
    idx = torch.tensor([0.0, 1.0, 0.0, 2.0], device="kpt_sim").nonzero()
    assert idx.device.type == "kpt_sim" and idx.cpu().flatten().tolist() == [1, 3]
    assert sim.fallback_report() == {}


def test_cross_device_copy(sim):
    x = torch.arange(8.0, device="kpt_sim:0")
    y = x.to("kpt_sim:1")
    assert y.device == torch.device("kpt_sim", 1)
    torch.testing.assert_close(y.cpu(), torch.arange(8.0))
    with pytest.raises(RuntimeError, match="one kpt_sim device"):
        x + y


def test_autocast_bf16(sim):
    a, b = torch.randn(8, 8, device="kpt_sim"), torch.randn(8, 8, device="kpt_sim")
    with torch.autocast("kpt_sim", dtype=torch.bfloat16):
        c = a @ b
    assert c.dtype == torch.bfloat16
    torch.testing.assert_close(c.float().cpu(), a.cpu() @ b.cpu(), rtol=2e-2, atol=5e-2)


def test_a_librarys_own_device_kernel_runs_on_kpt_sim_and_writes_where_it_says(sim):
    """FSDP2's all_gather_copy_in writes into its output argument without its schema saying
    so: run through its own PrivateUse1 kernel, the copy lands in the caller's tensor."""
    import torch.distributed.fsdp._fully_shard._fsdp_collectives  # (defines the op)

    inputs = [torch.arange(5.0) + 1, torch.arange(7.0) + 10]
    output = torch.zeros(24, device="kpt_sim")
    gathered_in, gathered_out = torch.ops.fsdp.all_gather_copy_in(
        [t.to("kpt_sim") for t in inputs], output, [5, 7], 12, 1
    )
    expected = torch.cat([torch.zeros(12), *inputs])
    assert torch.equal(output.cpu(), expected)
    assert torch.equal(gathered_out.cpu(), expected)
    assert torch.equal(gathered_in.cpu(), expected[12:])
    assert gathered_in.storage_offset() == 12  # a view of the output, as on CUDA


def test_inference_mode_takes_views_of_tensors_made_outside_it(sim):
    """As on CPU and CUDA: inside inference_mode a view of a normal tensor is a normal tensor
    (autograd shares its base's version counter), of an inference tensor an inference one."""
    results = {}
    for device in ("cpu", "kpt_sim"):
        torch.manual_seed(0)
        weight = torch.randn(4, 4).to(device)
        layer = torch.nn.Linear(4, 4).to(device)
        x = torch.randn(2, 4).to(device)
        with torch.inference_mode():
            flat, transposed = weight.view(16), weight.t()
            made_inside = torch.ones(4, 4, device=device).t()
            out = layer(x @ transposed)
        assert not flat.is_inference() and not transposed.is_inference()
        assert made_inside.is_inference()
        weight.add_(1)  # a normal in-place op after: the views see it
        results[device] = [flat.cpu(), out.cpu()]
    for on_cpu, on_sim in zip(results["cpu"], results["kpt_sim"], strict=True):
        torch.testing.assert_close(on_sim, on_cpu)


def test_views_under_inference_mode_alias_their_base(sim):
    with torch.inference_mode():
        base = torch.arange(16.0).reshape(4, 4).to("kpt_sim")
        base[:, 1].add_(1)
        base.narrow(0, 2, 1).mul_(2)
        flat = base.reshape(16)
        pieces = torch.split(base.t(), 2)
    expected = torch.arange(16.0).reshape(4, 4)
    expected[:, 1] += 1
    expected[2] *= 2
    assert torch.equal(base.cpu(), expected)
    assert torch.equal(flat.cpu(), expected.reshape(16))
    assert torch.equal(pieces[1].cpu(), expected.t()[2:])


def test_a_copy_onto_the_same_elements_costs_nothing_and_others_still_copy(sim):
    """CUDA's copy_ returns at once when source and target are the same elements (DDP with a
    comm hook copies each bucket's result onto its own gradient view); a real copy still runs."""
    host = torch.randn(1024, 1024)
    x = host.to("kpt_sim")

    def simulated_ms(copy) -> float:
        start = torch.kpt_sim.Event(enable_timing=True)
        end = torch.kpt_sim.Event(enable_timing=True)
        start.record()
        copy()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    assert simulated_ms(lambda: x.copy_(x.view(1024, 1024))) == 0
    assert simulated_ms(lambda: x.view(-1).copy_(x.view(-1))) == 0
    assert simulated_ms(lambda: x[:512].copy_(x[512:])) > 0  # same storage, other elements
    torch.testing.assert_close(x.cpu(), torch.cat([host[512:], host[512:]]))
