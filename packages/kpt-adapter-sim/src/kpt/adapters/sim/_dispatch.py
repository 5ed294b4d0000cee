"""Every aten op on a kpt_sim tensor: outputs from meta, values computed by the daemon.

For each op the client (1) runs it on meta tensors to learn output shapes, dtypes and strides
without waiting, (2) gives fresh outputs new buffers and makes view outputs share their source's
buffer, (3) sends one asynchronous launch naming the op. Ops the executor cannot run, or whose
output shape depends on values, run on the CPU instead (a one-time warning, counted).
How each op is handled and its plans are kept in the Runtime's PlanCache (``rt.plans``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_map

from kpt.adapters.sim._autograd_guard import check_graph_device, needs_check
from kpt.adapters.sim._decompositions import decomposition_for
from kpt.adapters.sim._fallback import cpu_fallback, run_on_cpu
from kpt.adapters.sim._foreach import is_foreach, run_chunked
from kpt.adapters.sim._fused import FusedKernels
from kpt.adapters.sim._plan import (
    PLAN_CACHE_LIMIT,
    Plan,
    encode_attrs,
    fetch,
    make_plan,
    op_info,
    signature,
)
from kpt.adapters.sim._plan_cache import PlanCache, remember
from kpt.adapters.sim._runtime import Runtime, runtime
from kpt.adapters.sim._serialization import adopt_host_storage
from kpt.adapters.sim._tensor import SimTensor, to_host
from kpt.adapters.sim._transfer import copy_between, new_tensor, upload_into
from kpt.adapters.sim._value_sized import has_mask, index_with_masks
from kpt.adapters.sim_executor import is_allowed

aten = torch.ops.aten
_INPLACE_VIEW = torch.Tag.inplace_view
_PYTHON_KEY = torch._C.DispatchKeySet(torch._C.DispatchKey.Python)
_DEVICE_KEY = torch._C.DispatchKeySet(torch._C.DispatchKey.PrivateUse1)
# Ops this module plans, decomposes or falls back. c10d's own ops are among them: they run on
# the group's backend for the tensor's device, and a group with none for kpt_sim (gloo) runs
# them on CPU copies, as before; a kpt group is a Python group, called without them.
_OPERATOR_NAMESPACES = ("aten", "prims", "c10d")
# Ops that only make buffers: no values to compute.
_ALLOCATING = {aten.empty.memory_format, aten.empty_strided, aten.empty_like, aten.new_empty,
               aten.new_empty_strided}  # fmt: skip
# Ops that return Python values (blocking by nature, like CUDA): not counted as fallbacks.
_HOST_RESULT = {aten._local_scalar_dense, aten.equal, aten.is_nonzero, aten.is_same_size,
                aten._fused_sdp_choice}  # fmt: skip


def dispatch(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
    cache = runtime().plans
    handler = cache.handlers.get(func)
    if handler is None:
        handler = cache.handlers[func] = _handler_for(func, cache)
    return handler(func, args, kwargs)


def _handler_for(func: Any, cache: PlanCache) -> Any:
    """How every call of ``func`` is handled: decided once per op."""
    special = _SPECIAL.get(func) or _SPECIAL.get(func._overloadpacket)
    if special is not None:
        return special
    if _INPLACE_VIEW in func.tags:
        return _restride_in_place
    if func.namespace not in _OPERATOR_NAMESPACES and _has_device_kernel(func):
        return _device_kernel
    if _is_composite(func) and not is_allowed(op_info(func, cache).name):
        # Composite ops reach here only when autograd is off (inference_mode, or an op called
        # inside this dispatch): planned as they stand, `to` would become a bit-reinterpreting
        # view and reshape a view that needs a copy. Run what they are made of instead.
        return _decomposed
    if func._overloadpacket in _HOST_RESULT:
        return run_on_cpu
    info = op_info(func, cache)
    if func in _ALLOCATING or func._overloadpacket in _ALLOCATING:
        return _planned  # fresh outputs, no launch: plans know (launch=False)
    if info.launches and not is_allowed(info.name):
        decomposition = decomposition_for(func)
        if decomposition is not None:  # run as allow-listed ops on the device
            return lambda func, args, kwargs: decomposition(*args, **kwargs)
        return _not_allowed
    if is_foreach(func):  # tensor lists: one launch per chunk, as CUDA's multi_tensor_apply
        return _foreach
    return _planned


def _has_device_kernel(func: Any) -> bool:
    name = func.name()
    return any(torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
               for key in ("PrivateUse1", "CompositeExplicitAutograd"))  # fmt: skip


def _device_kernel(func: Any, args: tuple, kwargs: dict) -> Any:
    """A library's own op with a kernel for PrivateUse1 or for every device (FSDP2's copy-in
    ops, torch's functional collectives): written out of tensor ops and process-group calls,
    which come back here and to the kpt_sim route of the backend. On the CPU instead, an op
    that writes into an argument its schema does not mark as written (FSDP2's
    all_gather_copy_in does) would write a copy and lose the values, and one that wraps its
    input (functional collectives' results) would wrap a CPU copy."""
    return func.redispatch(_DEVICE_KEY, *args, **kwargs)


def _is_composite(func: Any) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")


def _decomposed(func: Any, args: tuple, kwargs: dict) -> Any:
    return func.decompose(*args, **kwargs)


def _foreach(func: Any, args: tuple, kwargs: dict) -> Any:
    return run_chunked(_planned, func, args, kwargs, op_info(func, runtime().plans))


def _not_allowed(func: Any, args: tuple, kwargs: dict) -> Any:
    return cpu_fallback(func, args, kwargs, reason="not in the torch executor's allow-list")


def _planned(func: Any, args: tuple, kwargs: dict) -> Any:
    """The hot path: look the call's plan up (or make it), then carry it out."""
    rt = runtime()
    cache = rt.plans
    tensors: list[SimTensor] = []
    try:
        key = (func, signature(args, kwargs, tensors, op_info(func, cache).exact_floats))
        plan = cache.plans.get(key)
    except TypeError:  # an unhashable argument: plan this call alone
        key = plan = None
    if plan is None:
        plan = _new_plan(func, args, kwargs, tensors, cache)
        if key is not None:
            remember(cache.plans, key, plan, PLAN_CACHE_LIMIT)
    if type(plan) is str:  # the reason this call runs on the CPU
        return cpu_fallback(func, args, kwargs, reason=plan)
    return _run(plan, args, kwargs, tensors, rt)


def _new_plan(func: Any, args: tuple, kwargs: dict, tensors: list, cache: PlanCache) -> Plan | str:
    info = op_info(func, cache)
    try:
        specs = output_specs(func, args, kwargs)
    except (NotImplementedError, torch._subclasses.fake_tensor.DataDependentOutputException):
        return "output shape depends on values"
    if not info.tensor_returns:
        return "returns a non-tensor value"
    allocating = func in _ALLOCATING or func._overloadpacket in _ALLOCATING
    return make_plan(func, info, args, kwargs, tensors, specs, launch=not allocating, cache=cache)


def _run(plan: Plan, args: tuple, kwargs: dict, tensors: list, rt: Runtime) -> Any:
    if tensors:
        device = tensors[0]._sim.device
        for t in tensors:
            if t._sim.device != device:
                _mixed_devices(plan.info.name, tensors)
    else:
        device = rt.current_device
    if needs_check(device):  # false for every device once it is known to have an engine queue
        check_graph_device(device, tensors, plan.info.name)
    results: list[Any] = []
    out_refs: list[list] = []
    for recipe in plan.results:
        kind = recipe[0]
        if kind == "new":
            results.append(_fresh(recipe[1], device, out_refs, rt))
        elif kind == "same":
            results.append(fetch(recipe[1], args, kwargs))
        else:
            source = fetch(recipe[1], args, kwargs)
            results.append(_build(recipe[2], lambda sp, s=source: _view_from_spec(s, sp)))
    if plan.launch:
        attrs = plan.attrs
        if attrs is None:
            attrs = encode_attrs(args, kwargs, tensors, plan.out_index, plan.out_name)
        if plan.info.seeded:
            attrs = {**attrs, "rng": rt.next_rng(device)}
        in_refs = [[t._sim.buffer, *tail] for t, tail in zip(tensors, plan.input_tails)]
        if plan.out_index is not None:  # out= variant: the output is written as an argument
            in_refs += out_refs
            out_refs = []
        state = rt.state[device]
        rt.client.launch(device, plan.op, in_refs, out_refs, attrs, stream=state.stream,
                         cost=plan.cost, host_ops=state.host_ops)  # fmt: skip
        state.host_ops = 0
        if rt.tracer is not None:
            rt.tracer.launched(device, plan.op, tensors, plan.cost, rt.allocator.allocated[device])
        if rt.settings.launch_blocking:  # like CUDA_LAUNCH_BLOCKING: errors point at their op
            rt.client.synchronize(device)
    else:  # a view or an allocation: host time only, told with the next launch
        rt.state[device].host_ops += 1
    if plan.info.single:
        return results[0]
    return tuple(results) if results else None  # "-> ()" ops return None


def _fresh(spec: Any, device: int, out_refs: list, rt: Runtime) -> Any:
    if spec is None:
        return None
    if isinstance(spec, list):
        return [_fresh(s, device, out_refs, rt) for s in spec]
    storage = rt.allocator.allocate(device, spec.nbytes)
    out_refs.append([storage.buffer, *spec.wire_tail])
    return SimTensor(storage, spec.shape, spec.stride, spec.offset, spec.dtype)


def _mixed_devices(name: str, tensors: list) -> None:
    raise RuntimeError(
        f"{name}: expected all tensors on one kpt_sim device, got devices "
        f"{sorted({t._sim.device for t in tensors})}; move them with .to('kpt_sim:N') first"
    )


# -- output shapes from meta ---------------------------------------------------------------------
# A spec is (shape, stride, storage_offset, dtype), a list of specs (Tensor[] returns) or None.
def output_specs(func: Any, args: tuple, kwargs: dict) -> list:
    """Per return of ``func``: the spec(s) of its output(s), from meta tensors (plans keep them)."""
    meta_out = func(*_to_meta(args), **_to_meta(kwargs))
    returns = len(func._schema.returns)
    if returns == 0:  # "-> ()": in-place list ops (_foreach_mul_) return nothing
        return []
    values = meta_out if returns != 1 else (meta_out,)
    return [_spec(v) for v in values]


def _spec(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.stride(), value.storage_offset(), value.dtype)
    if isinstance(value, list | tuple):
        return [_spec(v) for v in value]
    return None


def _build(spec: Any, make: Any) -> Any:
    if spec is None:
        return None
    if isinstance(spec, list):
        return [_build(s, make) for s in spec]
    return make(spec)


def _view_from_spec(source: Any, spec: tuple) -> SimTensor:
    if not isinstance(source, SimTensor):  # a list argument: views of its first tensor
        source = next(s for s in source if isinstance(s, SimTensor))
    shape, stride, offset, dtype = spec
    if torch.is_inference_mode_enabled() and not source.is_inference():
        # A view of a normal tensor is a normal tensor, also under inference_mode (autograd
        # then shares the base's version counter with it, which an inference tensor has not).
        with torch.inference_mode(False):
            return SimTensor(source._sim, shape, stride, offset, dtype)
    return SimTensor(source._sim, shape, stride, offset, dtype)


def _to_meta(tree: Any) -> Any:
    def convert(x: Any) -> Any:
        if isinstance(x, SimTensor):
            meta = torch.empty(0, dtype=x.dtype, device="meta")
            return meta.as_strided(x.shape, x.stride(), x.storage_offset())
        if isinstance(x, torch.device):
            return torch.device("meta")
        return x

    return tree_map(convert, tree)


def _restride_in_place(func: Any, args: tuple, kwargs: dict) -> Any:
    """transpose_, unsqueeze_, ...: change the wrapper's own sizes/strides; no data moves."""
    with torch._C._ExcludeDispatchKeyGuard(_PYTHON_KEY):
        return func(*args, **kwargs)


# -- ops with their own meaning on a remote device ----------------------------------------------
def _copy_(func: Any, args: tuple, kwargs: dict) -> Any:
    dst, src = args[0], args[1]
    if isinstance(dst, SimTensor) and isinstance(src, SimTensor):
        if dst._sim.device != src._sim.device:
            check_graph_device(max(dst._sim.device, src._sim.device), args[:2], "aten::copy_")
            copy_between(src, dst)
            return dst
        if _same_data(dst, src):
            return dst
        return _planned(func, args, kwargs)
    if isinstance(dst, SimTensor):  # host -> device
        if needs_check(dst._sim.device):
            check_graph_device(dst._sim.device, args[:2], "aten::copy_")
        upload_into(dst, src)
        return dst
    dst.copy_(to_host(src))  # device -> host
    return dst


def _same_data(dst: SimTensor, src: SimTensor) -> bool:
    """A copy onto the very elements it reads, as CUDA's copy_ returns at once for (aten's
    copy_impl): DDP with a comm hook and bucket views copies every gradient onto itself."""
    return (
        dst._sim is src._sim
        and dst.storage_offset() == src.storage_offset()
        and dst.dtype == src.dtype
        and dst.shape == src.shape
        and dst.stride() == src.stride()
        and dst.is_conj() == src.is_conj()
        and dst.is_neg() == src.is_neg()
    )


def _to_copy(func: Any, args: tuple, kwargs: dict) -> Any:
    source = args[0]
    device = kwargs.get("device")
    target = torch.device(device) if device is not None else source.device
    if source._sim.device or target.index:
        check_graph_device(max(source._sim.device, target.index or 0), [source], "aten::_to_copy")
    if target.type != "kpt_sim":
        host = to_host(source)
        rest = {k: v for k, v in kwargs.items() if k != "device"}
        return aten._to_copy.default(host, **rest, device=target)
    index = target.index if target.index is not None else runtime().current_device
    if index != source._sim.device:
        moved = new_tensor(index, _to_meta(source))
        copy_between(source, moved)
        rest = {k: v for k, v in kwargs.items() if k != "device"}
        return aten._to_copy.default(moved, **rest) if rest.get("dtype") else moved
    return _planned(func, args, kwargs)


def _local_scalar_dense(func: Any, args: tuple, kwargs: dict) -> Any:
    return to_host(args[0]).item()


def _lift_fresh(func: Any, args: tuple, kwargs: dict) -> Any:
    return args[0]


def _record_stream(func: Any, args: tuple, kwargs: dict) -> Any:
    return None


def _index(func: Any, args: tuple, kwargs: dict) -> Any:
    if has_mask(args[1]):  # sized by the masks' values: one sync for the size, as on CUDA
        return index_with_masks(*args)
    return _planned(func, args, kwargs)


def _multi_head_attention(func: Any, args: tuple, kwargs: dict) -> Any:
    """nn.MultiheadAttention's fused inference op: without need_weights its weights are None, as
    the CPU's and CUDA's kernels leave them (its meta kernel gives an empty tensor instead)."""
    output, weights = _planned(func, args, kwargs)
    need_weights = args[10] if len(args) > 10 else kwargs.get("need_weights", True)
    return output, weights if need_weights else None


def _fused_sdp_choice(func: Any, args: tuple, kwargs: dict) -> int:
    # The math backend decomposes into matmul/softmax, which every executor runs.
    return int(torch.nn.attention.SDPBackend.MATH.value)


_SPECIAL = {
    aten.copy_.default: _copy_,
    aten._to_copy.default: _to_copy,
    aten._local_scalar_dense.default: _local_scalar_dense,
    aten.lift_fresh.default: _lift_fresh,
    aten.record_stream.default: _record_stream,
    aten._fused_sdp_choice.default: _fused_sdp_choice,
    aten._native_multi_head_attention.default: _multi_head_attention,
    aten.index.Tensor: _index,
    aten.set_.source_Storage_storage_offset: adopt_host_storage,  # torch.load to kpt_sim
    aten.set_.source_Storage: adopt_host_storage,
}
_FUSED = FusedKernels(_new_plan, _run)
_SPECIAL.update(_FUSED.handlers())  # fused attention, optimizers, foreach costs


def register_kernels(library: torch.library.Library) -> None:
    """Register the fused kernels' autograd entries (attention, LSTM) into kpt_sim's library."""
    _FUSED.register(library)
