"""Triton kernels on kpt_sim: run on the host interpreter, charged on the simulated chip."""

import json

import pytest
import torch

from kpt.adapters.sim_hal import SimAdapter
from kpt.hal import HostKernelRun


def _elapsed_ms(work):
    start, end = torch.kpt_sim.Event(enable_timing=True), torch.kpt_sim.Event(enable_timing=True)
    start.record()
    work()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def test_host_kernel_is_charged_as_memory_bound_work(sim):
    adapter = SimAdapter()
    bandwidth = adapter.capabilities(0).memory_bandwidth.amount
    moved = 2 * 2**30  # 1 GiB in, 1 GiB out
    run = HostKernelRun("big_kernel", (4096, 1, 1), torch.device("kpt_sim", 0), 0.5, 2**30, 2**30)
    elapsed = _elapsed_ms(lambda: adapter.on_host_kernel(0, run))
    at_full_bandwidth = moved / bandwidth * 1e3
    # The profile's efficiency can only slow it down; the host's 0.5 s must not leak in.
    assert at_full_bandwidth * 0.9 <= elapsed <= at_full_bandwidth * 4, (elapsed, at_full_bandwidth)
    small = HostKernelRun("small_kernel", (1, 1, 1), torch.device("kpt_sim", 0), 0.5, 4096, 4096)
    assert _elapsed_ms(lambda: adapter.on_host_kernel(0, small)) < elapsed / 10


def test_host_kernel_on_a_missing_device_warns_instead_of_raising(sim):
    run = HostKernelRun("k", (1, 1, 1), torch.device("kpt_sim", 7), 0.0, 4, 4)
    with pytest.warns(RuntimeWarning, match="could not charge Triton kernel 'k'"):
        SimAdapter().on_host_kernel(7, run)


def test_host_kernel_op_refuses_tensors_in_the_executor():
    from kpt.adapters.sim_executor import TorchExecutor

    with pytest.raises(ValueError, match="only charges time"):
        TorchExecutor().run("triton::k", [object()], [], {})


def _charges(tmp_path, name: str, kernel: str) -> list[dict]:
    from kpt.adapters.sim._runtime import runtime

    path = runtime().client.dump_trace(tmp_path / name)
    with open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("name") == f"triton::{kernel}"]


def test_run_triton_computes_on_the_host_and_charges_the_device(sim, tmp_path):
    pytest.importorskip("triton")
    from kpt.hal import run_triton
    from kpt.hal.testing._kernels import vector_add

    n = 1000
    x, y = torch.randn(n, device="kpt_sim"), torch.randn(n, device="kpt_sim")
    out = torch.empty(n, device="kpt_sim")
    # The session's daemon is shared with other tests (kpt.hal's standard suite runs vector_add
    # too): count only the charges this call adds.
    before = _charges(tmp_path, "before.json", "vector_add")
    result = run_triton(vector_add, (4,), x, y, out, n, BLOCK=256, adapter=SimAdapter())
    assert result.mode == "interpreter"
    torch.testing.assert_close(out.cpu(), x.cpu() + y.cpu())
    charged = _charges(tmp_path, "after.json", "vector_add")[len(before) :]
    assert len(charged) == 1 and charged[0]["dur"] > 0
