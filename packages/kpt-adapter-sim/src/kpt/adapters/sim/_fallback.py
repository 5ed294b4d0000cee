"""Ops the device cannot run remotely run on the client's CPU: warned once, always counted."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map

from kpt.adapters.sim._runtime import current_runtime, runtime
from kpt.adapters.sim._tensor import SimTensor, read_storage


class SimFallbackWarning(UserWarning):
    """An op ran on the CPU instead of the simulated device (values right, time not charged)."""


def fallback_report() -> dict[str, dict[str, Any]]:
    """{op name: {"count": calls that ran on the CPU, "reason": why}} since this process
    connected to the simulator (``shutdown()`` starts a new count)."""
    rt = current_runtime()
    return rt.fallbacks.fallbacks() if rt is not None else {}


def reset_fallback_report() -> None:
    rt = current_runtime()
    if rt is not None:
        rt.fallbacks.clear()


def estimate_failure_report() -> dict[str, dict[str, Any]]:
    """{op name: {"count": launches, "reason": why}} of ops whose cost the client could not
    estimate (the daemon estimated them instead, possibly by a generic formula)."""
    rt = current_runtime()
    return rt.fallbacks.estimate_failures() if rt is not None else {}


def count_estimate_failure(op: str, error: BaseException) -> None:
    """An op whose cost the client could not work out: counted in estimate_failure_report()
    and warned once, as a CPU fallback is; the daemon then estimates it."""
    reason = f"cost not estimated on the client ({type(error).__name__}: {error})"
    if runtime().fallbacks.count_estimate_failure(op, reason):
        warnings.warn(
            f"kpt_sim: {op}: {reason}; the daemon estimates it instead, which may charge it by "
            "a generic formula. See kpt.adapters.sim.estimate_failure_report().",
            SimFallbackWarning,
            stacklevel=5,
        )


def cpu_fallback(func: Any, args: tuple, kwargs: dict, reason: str) -> Any:
    name = f"{func._schema.name}.{func._overloadname}"
    if runtime().fallbacks.count_fallback(name, reason):
        warnings.warn(
            f"kpt_sim: {name} runs on the CPU ({reason}); values are right but its time is not "
            "simulated. See kpt.adapters.sim.fallback_report().",
            SimFallbackWarning,
            stacklevel=4,
        )
    return run_on_cpu(func, args, kwargs)


WORK_TYPE = "__torch__.torch.classes.c10d.Work"


def wait_for_async_work(result: Any) -> None:
    """Wait for every c10d Work an op returned (gloo collectives run on a background thread).

    The host copies must hold the collective's result before they are written back to the
    device; the Work the caller gets is then already complete, so its own wait() returns at once.
    """
    for item in tree_flatten(result)[0]:
        if isinstance(item, torch.ScriptObject) and _qualified_name(item) == WORK_TYPE:
            item.wait()


def _qualified_name(script_object: torch.ScriptObject) -> str:
    try:
        return script_object._type().qualified_name()
    except (AttributeError, RuntimeError):  # not a TorchScript class instance
        return ""


def mutates_arguments(func: Any) -> bool:
    """Whether ``func`` may write into its tensor arguments (their host copies go back).

    c10d's ops (allreduce_, broadcast_, allgather_, ...) write their tensor arguments in place
    but their schemas declare no aliasing, so the namespace decides for them.
    """
    schema = func._schema
    if func.namespace == "c10d":
        return True
    return any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


def run_on_cpu(func: Any, args: tuple, kwargs: dict) -> Any:
    """Run on CPU copies of whole buffers (keeps aliasing), write mutated buffers back."""
    flat, _ = tree_flatten((args, kwargs))
    storages = {id(t._sim): t._sim for t in flat if isinstance(t, SimTensor)}
    hosts = {key: read_storage(s, 0, s.nbytes) for key, s in storages.items()}
    device = next(iter(storages.values())).device if storages else runtime().current_device

    def to_cpu(x: Any) -> Any:
        if isinstance(x, SimTensor):
            base = hosts[id(x._sim)]
            usable = base.numel() - base.numel() % x.element_size()
            return base[:usable].view(x.dtype).as_strided(x.shape, x.stride(), x.storage_offset())
        if isinstance(x, torch.device) and x.type == "kpt_sim":
            return torch.device("cpu")
        return x

    result = func(*tree_map(to_cpu, args), **tree_map(to_cpu, kwargs))
    wait_for_async_work(result)
    if mutates_arguments(func):
        for key, storage in storages.items():
            runtime().client.write(storage.buffer, 0, hosts[key].numpy())
    by_pointer = {hosts[k].data_ptr(): storages[k] for k in hosts if hosts[k].numel()}

    def to_device(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        pointer = x.untyped_storage().data_ptr()
        if pointer in by_pointer:  # a view of an argument: a view of its device buffer
            storage = by_pointer[pointer]
            return SimTensor(storage, x.shape, x.stride(), x.storage_offset(), x.dtype)
        from kpt.adapters.sim._transfer import new_tensor, upload_into

        made = new_tensor(device, torch.empty(x.shape, dtype=x.dtype, device="meta"))
        upload_into(made, x)
        return made

    return tree_map(to_device, result)
