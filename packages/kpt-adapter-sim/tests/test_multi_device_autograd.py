"""Backward and optimizer steps on kpt_sim:1+ in one process (the native device guard).

The session's guard is the one installed at import (compiled once into the shared cache);
only test_the_guard_builds_from_source pays for a compile.
"""

import copy
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from kpt.adapters.sim import _autograd_guard, _native_guard


@pytest.fixture
def native(sim):
    reason = _autograd_guard.native_guard_reason()
    if reason is not None:
        pytest.skip(f"native device guard unavailable here: {reason}")
    return _autograd_guard._state.library


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _train(model, device, optimizer_type, steps=3):
    model = model.to(device)
    optimizer = optimizer_type(model.parameters(), lr=0.05)
    torch.manual_seed(1)
    batches = [(torch.randn(8, 6), torch.randn(8, 3)) for _ in range(steps)]
    for x, y in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x.to(device)), y.to(device))
        loss.backward()
        optimizer.step()
    return [p.detach().cpu() for p in model.parameters()], [
        p.grad.device for p in model.parameters()
    ]


@pytest.mark.parametrize("optimizer_type", [torch.optim.SGD, torch.optim.AdamW])
def test_training_on_device_1_matches_cpu(native, optimizer_type):
    expected, _ = _train(_mlp(), "cpu", optimizer_type)
    got, grad_devices = _train(_mlp(), "kpt_sim:1", optimizer_type)
    assert grad_devices == [torch.device("kpt_sim:1")] * len(got)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    assert got[0].ne(_mlp()[0].weight.detach()).any()  # the steps did move the weights


def test_pipeline_over_devices_0_and_1_gets_cpu_gradients(native):
    first, second = torch.nn.Linear(5, 7), torch.nn.Linear(7, 2)
    x = torch.randn(4, 5)
    loss = second(torch.relu(first(x))).square().mean()
    expected = torch.autograd.grad(loss, [*first.parameters(), *second.parameters()])

    first.to("kpt_sim:0")
    second.to("kpt_sim:1")
    hidden = torch.relu(first(x.to("kpt_sim:0"))).to("kpt_sim:1")  # stage boundary
    second(hidden).square().mean().backward()
    for param, want in zip([*first.parameters(), *second.parameters()], expected):
        torch.testing.assert_close(param.grad.cpu(), want, rtol=1e-5, atol=1e-6)
    assert {p.grad.device for p in first.parameters()} == {torch.device("kpt_sim:0")}
    assert {p.grad.device for p in second.parameters()} == {torch.device("kpt_sim:1")}


def test_data_parallel_replicas_on_two_devices_sum_to_the_cpu_gradient(native):
    base, x = torch.nn.Linear(4, 2), torch.randn(6, 4)
    base(x).square().mean().backward()
    replicas = [copy.deepcopy(base).to(f"kpt_sim:{i}") for i in range(2)]
    for replica in replicas:
        replica.zero_grad()
    halves = [replicas[i](x[3 * i : 3 * i + 3].to(f"kpt_sim:{i}")).square().mean() for i in (0, 1)]
    ((halves[0] + halves[1].to("kpt_sim:0")) / 2).backward()  # both branches meet on device 0
    summed = replicas[0].weight.grad.cpu() + replicas[1].weight.grad.cpu()
    torch.testing.assert_close(summed, base.weight.grad, rtol=1e-5, atol=1e-6)


def test_engine_has_a_queue_for_every_device(native):
    torch.ones(1, device="kpt_sim:1", requires_grad=True).sum().backward()
    queues = _native_guard.engine_device_queues(native)
    assert queues is not None and queues >= torch.kpt_sim.device_count()


def test_the_guard_builds_from_source(sim, tmp_path):
    if _autograd_guard.native_guard_reason() is not None:
        pytest.skip(
            f"native device guard unavailable here: {_autograd_guard.native_guard_reason()}"
        )
    started = time.perf_counter()
    library = _native_guard.load(tmp_path)
    print(f"first compile + load: {time.perf_counter() - started:.1f} s")
    built = _native_guard.library_path(tmp_path)
    assert built.exists() and [p.name for p in tmp_path.glob("*.so")] == [built.name]
    assert _native_guard.engine_device_queues(library) is not None  # reads this process's engine
    mtime = built.stat().st_mtime_ns
    _native_guard.load(tmp_path)
    assert built.stat().st_mtime_ns == mtime  # the second load reuses the build


def test_a_missing_compiler_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "kpt-no-such-compiler")
    with pytest.raises(_native_guard.NativeGuardUnavailable, match="no C\\+\\+ compiler"):
        _native_guard.load(tmp_path)
    assert not list(tmp_path.glob("*.so"))


def test_a_failing_compile_shows_the_compiler_output(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "false")  # on PATH, exits 1
    with pytest.raises(_native_guard.NativeGuardUnavailable, match="exit 1"):
        _native_guard.load(tmp_path)
    assert not list(tmp_path.glob("*.so"))


def test_an_unwritable_cache_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(_native_guard.NativeGuardUnavailable, match="KPT_SIM_EXTENSIONS_DIR"):
        _native_guard.load(blocker / "cache")


def _child(code: str, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "KPT_SIM_DEVICES": "2", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


REFUSED_THEN_WORKAROUND = """
    import torch
    {before}
    import kpt.adapters.sim as ks
    w = torch.ones(3, device="kpt_sim:1", requires_grad=True)
    try:
        (w * 2).sum().backward()
        print("NOT REFUSED")
    except RuntimeError as error:
        print("REFUSED:", error)
    with torch.autograd.set_multithreading_enabled(False):  # the way around named in the error
        (w * 3).sum().backward()
    print("GRAD", w.grad.cpu().tolist())
    ks.shutdown()
"""


def test_without_a_compiler_backward_on_device_1_is_refused_with_the_reason(sim, tmp_path):
    done = _child(
        REFUSED_THEN_WORKAROUND.format(before=""),
        CXX="kpt-no-such-compiler",
        KPT_SIM_EXTENSIONS_DIR=str(tmp_path),
    )
    refusal = next(line for line in done.stdout.splitlines() if line.startswith("REFUSED"))
    assert "no C++ compiler" in refusal and "kpt-no-such-compiler" in refusal
    assert "KPT_SIM_VISIBLE_DEVICES=1" in refusal and "set_multithreading_enabled" in refusal
    assert "GRAD [3.0, 3.0, 3.0]" in done.stdout


def test_a_backward_before_import_sized_the_engine_and_is_named(sim):
    before = "x = torch.ones(2, requires_grad=True); (x * 2).sum().backward()"
    done = _child(REFUSED_THEN_WORKAROUND.format(before=before))
    refusal = next(line for line in done.stdout.splitlines() if line.startswith("REFUSED"))
    assert "made 0 device queue(s)" in refusal and "before `import kpt.adapters.sim`" in refusal
    assert "GRAD [3.0, 3.0, 3.0]" in done.stdout
