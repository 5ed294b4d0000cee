"""run_triton under the interpreter (CI has no GPU): values, hooks, and the errors it raises."""

from __future__ import annotations

import sys

import pytest
import torch

import kpt.hal as hal

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402


def _plus_fn(a, b):
    return a + b


# Built explicitly (not through @triton.jit, which looks at TRITON_INTERPRET) so the tests
# cover a compiled helper whatever the environment says.
_plus = JITFunction(_plus_fn)


def _add_fn(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, _plus(x, y), mask=mask)


def _scale_fn(x_ptr, n, factor, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) * factor, mask=mask)


COMPILED = JITFunction(_add_fn)
INTERPRETED = InterpretedFunction(_add_fn)


class HostAdapter(hal.CpuAdapter):
    """The CPU under another name, recording what run_triton tells it."""

    name = "hosttest"

    def __init__(self, target=None):
        self.target = target
        self.runs = []

    def triton_target(self):
        return self.target

    def on_host_kernel(self, index, run):
        self.runs.append((index, run))


def _inputs(n=300):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, generator=generator), torch.randn(n, generator=generator)


@pytest.mark.parametrize("kernel", [COMPILED, INTERPRETED], ids=["compiled", "interpreted"])
def test_cpu_runs_either_kind_of_kernel_under_the_interpreter(kernel):
    x, y = _inputs()
    out = torch.zeros_like(x)
    run = hal.run_triton(kernel, (3,), x, y, out, x.numel(), BLOCK=128)
    assert run.mode == "interpreter"
    assert run.device == torch.device("cpu", 0)
    torch.testing.assert_close(out, x + y)


def test_compiled_helpers_stay_uncallable_outside_kernels_afterwards():
    x, y = _inputs(10)
    hal.run_triton(COMPILED, (1,), x, y, torch.empty(10), 10, BLOCK=16)
    with pytest.raises(RuntimeError, match="outside of the scope of a kernel"):
        _plus(1, 2)


def test_grid_may_be_a_function_of_the_arguments():
    x, y = _inputs(1000)
    out = torch.zeros_like(x)
    adapter = HostAdapter()
    hal.run_triton(
        COMPILED, lambda meta: (triton.cdiv(meta["n"], meta["BLOCK"]),), x, y, out, 1000,
        BLOCK=64, device="cpu", adapter=adapter,
    )  # fmt: skip
    torch.testing.assert_close(out, x + y)
    ((index, run),) = adapter.runs
    assert index == 0 and run.grid == (16, 1, 1) and run.kernel == "_add_fn"
    assert run.host_seconds > 0
    assert run.bytes_in == run.bytes_out == 0  # host tensors are not copied


def test_every_adapter_has_a_no_op_on_host_kernel_hook():
    """The hook is part of the Adapter contract: an adapter that does not override it still
    runs kernels on the host, and the base method accepts the HostKernelRun and does nothing."""

    class Plain(hal.CpuAdapter):
        name = "plainhost"

    assert "on_host_kernel" not in vars(Plain) and "on_host_kernel" not in vars(hal.CpuAdapter)
    x, y = _inputs(10)
    out = torch.empty(10)
    run = hal.run_triton(COMPILED, (1,), x, y, out, 10, BLOCK=16, device="cpu", adapter=Plain())
    assert run.mode == "interpreter"
    torch.testing.assert_close(out, x + y)
    record = hal.HostKernelRun("k", (1, 1, 1), torch.device("cpu", 0), 0.1, 0, 0)
    assert Plain().on_host_kernel(0, record) is None


def test_in_place_kernel_with_scalar_argument():
    x = torch.arange(10, dtype=torch.float32)
    hal.run_triton(JITFunction(_scale_fn), (1,), x, 10, 2.5, BLOCK=16)
    torch.testing.assert_close(x, torch.arange(10, dtype=torch.float32) * 2.5)


def test_a_native_target_without_a_gpu_driver_is_a_clear_error():
    x, y = _inputs(10)
    with pytest.raises(hal.TritonUnavailableError, match=r"'cuda'.*no GPU driver"):
        hal.run_triton(COMPILED, (1,), x, y, torch.empty(10), 10, BLOCK=16,
                       adapter=HostAdapter(target="cuda"))  # fmt: skip


def test_an_interpreted_kernel_runs_even_where_a_native_target_exists():
    x, y = _inputs(10)
    out = torch.empty(10)
    adapter = HostAdapter(target="cuda")
    run = hal.run_triton(INTERPRETED, (1,), x, y, out, 10, BLOCK=16, adapter=adapter)
    assert run.mode == "interpreter" and len(adapter.runs) == 1
    torch.testing.assert_close(out, x + y)


def test_missing_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    from kpt.hal._triton import triton_available

    assert not triton_available()
    with pytest.raises(hal.TritonUnavailableError, match=r"pip install kpt-hal\[triton\]"):
        hal.run_triton(COMPILED, (1,), torch.empty(1), device="cpu")


def test_bad_calls_name_what_was_wrong():
    with pytest.raises(TypeError, match=r"needs a @triton\.jit kernel.*'_add_fn'"):
        hal.run_triton(_add_fn, (1,), torch.empty(1))
    with pytest.raises(ValueError, match="no device= and no tensor"):
        hal.run_triton(COMPILED, (1,), 10)
    with pytest.raises(ValueError, match="not served by adapter 'hosttest'"):
        hal.run_triton(COMPILED, (1,), torch.empty(1), device="meta", adapter=HostAdapter())


def test_autotuned_and_heuristic_kernels_run_on_the_host_with_their_meta():
    autotuned = triton.autotune(
        configs=[triton.Config({"BLOCK": 32}), triton.Config({"BLOCK": 64})], key=["n"]
    )(JITFunction(_add_fn))
    x, y = _inputs(100)
    out = torch.zeros_like(x)
    adapter = HostAdapter()
    hal.run_triton(autotuned, lambda m: (triton.cdiv(m["n"], m["BLOCK"]),), x, y, out, 100,
                   adapter=adapter)  # fmt: skip
    torch.testing.assert_close(out, x + y)
    assert adapter.runs[0][1].grid == (4, 1, 1)  # the first config: BLOCK=32

    sized = triton.heuristics({"BLOCK": lambda args: triton.next_power_of_2(args["n"])})(
        JITFunction(_add_fn)
    )
    out = torch.zeros_like(x)
    hal.run_triton(sized, (1,), x, y, out, 100)
    torch.testing.assert_close(out, x + y)
