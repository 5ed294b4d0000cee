"""run_triton: one call that runs a Triton kernel on any kpt device.

Where the device's adapter names a Triton target ("cuda", "hip", "xpu") the kernel is
launched natively. Where it names none (the CPU, the simulator) the kernel runs under
Triton's interpreter on the host: device tensors are copied to the host, the kernel runs
there, the results are copied back, and the adapter is told (``on_host_kernel``) so that a
simulator can charge the time the kernel would have taken on its chip.

``@triton.jit`` decides at decoration time: with TRITON_INTERPRET=1 set before the kernel was
defined it builds an interpreted kernel, otherwise a compiled one. run_triton accepts both: a
compiled kernel meant for the host is re-wrapped in triton's InterpretedFunction, so
TRITON_INTERPRET need not be set at all.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from kpt.hal._adapter import Adapter
from kpt.hal._types import HostKernelRun

Grid = tuple[int, ...] | Callable[[dict[str, Any]], tuple[int, ...]]
TritonMode = Literal["native", "interpreter"]

_INSTALL_HINT = "install it with `pip install kpt-hal[triton]` (or the triton matching your torch)"


class TritonUnavailableError(RuntimeError):
    """Triton cannot run this kernel here: not installed, or no target for the device."""


@dataclass(frozen=True)
class TritonRun:
    """What run_triton did."""

    mode: TritonMode
    device: torch.device
    seconds: float  # host wall time of the launch (native launches are asynchronous)


def triton_available() -> bool:
    """True when triton can be imported here."""
    try:
        importlib.import_module("triton")
    except Exception:
        return False
    return True


def _triton() -> Any:
    try:
        return importlib.import_module("triton")
    except ImportError as exc:
        raise TritonUnavailableError(f"triton is not installed ({exc}); {_INSTALL_HINT}") from None


def _kernel_kinds(triton: Any) -> tuple[type, type]:
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    return JITFunction, InterpretedFunction


def _wrappers() -> tuple[type, ...]:
    try:
        from triton.runtime.autotuner import Autotuner, Heuristics
    except ImportError:
        return ()
    return Autotuner, Heuristics


def _unwrap_for_host(kernel: Any, args: Sequence[Any], meta: dict[str, Any]) -> tuple[Any, dict]:
    """The plain kernel inside @triton.autotune / @triton.heuristics, with the meta they add.

    On the host an autotuned kernel runs its first config: timing configs there means nothing.
    """
    wrappers = _wrappers()
    meta = dict(meta)
    while wrappers and isinstance(kernel, wrappers):
        named = {**dict(zip(kernel.arg_names, args, strict=False)), **meta}
        if isinstance(kernel, wrappers[0]):  # Autotuner
            for key, value in kernel.configs[0].kwargs.items():
                meta.setdefault(key, value)
        else:  # Heuristics
            for key, rule in kernel.values.items():
                meta[key] = rule(named)
        kernel = kernel.fn
    return kernel, meta


def _kernel_name(kernel: Any) -> str:
    fn = getattr(kernel, "fn", kernel)
    return getattr(fn, "__name__", type(kernel).__name__)


# ---- interpreter path ---------------------------------------------------------------------
_interpreted_cache: dict[Any, Any] = {}
_patch_lock = threading.RLock()


def _interpreted(kernel: Any, jit_type: type, interpreted_type: type) -> Any:
    """The interpreted twin of a compiled @triton.jit function (cached per function)."""
    if isinstance(kernel, interpreted_type):
        return kernel
    twin = _interpreted_cache.get(kernel.fn)
    if twin is None:
        options = {}
        if getattr(kernel, "do_not_specialize", None):
            options["do_not_specialize"] = kernel.do_not_specialize
        try:
            twin = interpreted_type(kernel.fn, **options)
        except TypeError:  # older triton: no keyword options
            twin = interpreted_type(kernel.fn)
        _interpreted_cache[kernel.fn] = twin
    return twin


@contextlib.contextmanager
def _nested_jit_calls_interpreted(jit_type: type, interpreted_type: type) -> Iterator[None]:
    """Let a kernel call other @triton.jit helpers while interpreted.

    A compiled JITFunction refuses to be called from Python ("outside of the scope of a
    kernel"); inside an interpreted kernel the call must run the helper's interpreted twin.
    The patch only replaces a method that would otherwise raise, and is held under a lock.
    """
    original = jit_type.__call__

    def call_interpreted(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _interpreted(self, jit_type, interpreted_type)(*args, **kwargs)

    with _patch_lock:
        jit_type.__call__ = call_interpreted
        try:
            yield
        finally:
            jit_type.__call__ = original


def _host_copies(args: Sequence[Any], meta: dict[str, Any]) -> tuple[list, dict, list, int]:
    """Replace device tensors by host copies; returns (args, meta, pairs to copy back, bytes)."""
    by_id: dict[int, torch.Tensor] = {}
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    moved = 0

    def to_host(value: Any) -> Any:
        nonlocal moved
        if not isinstance(value, torch.Tensor) or value.device.type == "cpu":
            return value
        host = by_id.get(id(value))
        if host is None:  # one host copy per tensor object, so in-place kernels alias correctly
            host = value.detach().to("cpu", copy=True)
            by_id[id(value)] = host
            pairs.append((value, host))
            moved += host.numel() * host.element_size()
        return host

    host_args = [to_host(a) for a in args]
    host_meta = {k: to_host(v) for k, v in meta.items()}
    _refuse_overlapping_views(pairs)
    return host_args, host_meta, pairs, moved


def _refuse_overlapping_views(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    spans = []
    for device_tensor, _ in pairs:
        try:
            start = device_tensor.data_ptr()
            # Both must be addresses: kpt_sim storages report a buffer handle, tensors 0.
            real = device_tensor.untyped_storage().data_ptr() != 0 and start != 0
        except Exception:
            real = False
        if not real:  # Python-backend devices (the simulator) have no real addresses to compare
            return
        size = device_tensor.numel() * device_tensor.element_size()
        spans.append((start, start + size, device_tensor))
    spans.sort(key=lambda s: s[0])
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end and a is not b:
            raise ValueError(
                f"two different tensors on {a.device} overlap in memory ({tuple(a.shape)} and "
                f"{tuple(b.shape)}); the interpreter copies each to the host separately, so "
                "writes through one would not reach the other. Pass the same tensor object, "
                "or give the kernel non-overlapping tensors"
            )


def _padded(grid: Any, args: Sequence[Any], meta: dict[str, Any], fn: Any) -> tuple[int, ...]:
    if callable(grid):
        import inspect

        bound = inspect.signature(fn).bind_partial(*args, **meta)
        grid = grid(dict(bound.arguments))
    grid = tuple(int(g) for g in grid)
    return grid + (1,) * (3 - len(grid))


def _run_interpreted(
    kernel: Any,
    grid: Grid,
    args: Sequence[Any],
    meta: dict[str, Any],
    kinds: tuple[type, type],
) -> tuple[int, int, tuple[int, ...], float]:
    jit_type, interpreted_type = kinds
    twin = _interpreted(kernel, jit_type, interpreted_type)
    host_args, host_meta, pairs, bytes_in = _host_copies(args, meta)
    launch_grid = _padded(grid, host_args, host_meta, twin.fn)
    started = time.perf_counter()
    with _nested_jit_calls_interpreted(jit_type, interpreted_type):
        twin[grid](*host_args, **host_meta)
    seconds = time.perf_counter() - started
    bytes_out = 0
    for device_tensor, host in pairs:
        with torch.no_grad():
            device_tensor.copy_(host)
        bytes_out += host.numel() * host.element_size()
    return bytes_in, bytes_out, launch_grid, seconds


# ---- native path --------------------------------------------------------------------------
def _active_backend(triton: Any) -> str | None:
    try:
        return str(triton.runtime.driver.active.get_current_target().backend)
    except Exception:  # no GPU driver at all
        return None


def _device_context(device: torch.device) -> contextlib.AbstractContextManager:
    module = getattr(torch, device.type, None)
    select = getattr(module, "device", None)
    if device.index is None or not callable(select):
        return contextlib.nullcontext()
    return select(device.index)  # triton launches on the current device, so make it ours


def _run_native(
    kernel: Any, grid: Grid, args: Sequence[Any], meta: dict[str, Any], device: torch.device
) -> float:
    started = time.perf_counter()
    with _device_context(device):
        kernel[grid](*args, **meta)
    return time.perf_counter() - started


# ---- the public call ----------------------------------------------------------------------
def _resolve(
    device: Any, args: Sequence[Any], adapter: Adapter | None
) -> tuple[torch.device, Adapter]:
    if device is None:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors:
            raise ValueError(
                "run_triton got no device= and no tensor arguments to take one from; "
                "pass device='cuda:0', 'cpu', 'kpt_sim:0', ..."
            )
        device = tensors[0].device
    if adapter is not None:
        wanted = torch.device(device)
        if wanted.type != adapter.device_type:
            raise ValueError(
                f"device {str(wanted)!r} is not served by adapter {adapter.name!r} "
                f"(device type {adapter.device_type!r})"
            )
        return torch.device(wanted.type, wanted.index or 0), adapter
    import kpt.hal

    registry = kpt.hal.registry()
    found = registry.device(device)
    return found.torch_device, registry.adapter(found.adapter)


def run_triton(
    kernel: Any,
    grid: Grid,
    *args: Any,
    device: Any = None,
    adapter: Adapter | None = None,
    **meta: Any,
) -> TritonRun:
    """Launch a @triton.jit kernel for `device` (default: the first tensor argument's device).

    Native where the adapter has a Triton target and the kernel is compiled; on the host under
    Triton's interpreter otherwise (results copied back, the adapter told via on_host_kernel).
    `adapter` defaults to the one kpt.hal discovered for the device.
    Raises TritonUnavailableError when triton is missing or the target does not match.
    """
    triton = _triton()
    kinds = _kernel_kinds(triton)
    if not isinstance(kernel, kinds + _wrappers()):
        raise TypeError(
            f"run_triton needs a @triton.jit kernel (optionally autotuned or with heuristics), "
            f"got {type(kernel).__name__} ({_kernel_name(kernel)!r})"
        )
    torch_device, adapter = _resolve(device, args, adapter)
    target = adapter.triton_target()
    innermost = kernel
    while isinstance(innermost, _wrappers()):
        innermost = innermost.fn
    compiled = not isinstance(innermost, kinds[1])
    if target is not None and compiled:
        active = _active_backend(triton)
        if active is not None and active != target:
            raise TritonUnavailableError(
                f"adapter {adapter.name!r} compiles Triton for {target!r} but this triton's "
                f"active backend is {active!r}; install the triton build for {target}"
            )
        if active is None:
            raise TritonUnavailableError(
                f"adapter {adapter.name!r} compiles Triton for {target!r} but triton found no "
                f"GPU driver; check the driver, or set TRITON_INTERPRET=1 before defining "
                "kernels to run them on the host"
            )
        seconds = _run_native(kernel, grid, args, meta, torch_device)
        return TritonRun("native", torch_device, seconds)
    kernel, meta = _unwrap_for_host(kernel, args, meta)
    bytes_in, bytes_out, launch_grid, seconds = _run_interpreted(kernel, grid, args, meta, kinds)
    hook = getattr(adapter, "on_host_kernel", None)  # every Adapter has it (a no-op default)
    if hook is not None:
        run = HostKernelRun(
            _kernel_name(kernel), launch_grid, torch_device, seconds, bytes_in, bytes_out
        )
        hook(torch_device.index or 0, run)
    return TritonRun("interpreter", torch_device, seconds)
