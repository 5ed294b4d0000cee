"""Every aten op on a kpt_sim tensor: outputs from meta, values computed by the daemon.

For each op the client (1) runs it on meta tensors to learn output shapes, dtypes and strides
without waiting, (2) gives fresh outputs new buffers and makes view outputs share their source's
buffer, (3) sends one asynchronous launch naming the op. Ops the executor cannot run, or whose
output shape depends on values, run on the CPU instead (a one-time warning, counted).
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch.utils._pytree import tree_map

from kpt.adapters.sim._allowlist import is_allowed
from kpt.adapters.sim._fallback import cpu_fallback, run_on_cpu
from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim._tensor import SimTensor, to_host
from kpt.adapters.sim._transfer import (
    copy_between,
    new_tensor,
    tensor_ref,
    upload_into,
)
from kpt.adapters.sim._wirefmt import encode_args

aten = torch.ops.aten
# Like CUDA_LAUNCH_BLOCKING: wait for each op so an error points at the op that caused it.
_LAUNCH_BLOCKING = os.environ.get("KPT_SIM_LAUNCH_BLOCKING", "0") == "1"
_SEEDED = torch.Tag.nondeterministic_seeded
_INPLACE_VIEW = torch.Tag.inplace_view
_PYTHON_KEY = torch._C.DispatchKeySet(torch._C.DispatchKey.Python)
# Ops that only make buffers: no values to compute.
_ALLOCATING = {aten.empty.memory_format, aten.empty_strided, aten.empty_like, aten.new_empty,
               aten.new_empty_strided}  # fmt: skip
# Ops that return Python values (blocking by nature, like CUDA): not counted as fallbacks.
_HOST_RESULT = {aten._local_scalar_dense, aten.equal, aten.is_nonzero, aten.is_same_size,
                aten._fused_sdp_choice}  # fmt: skip


def dispatch(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
    special = _SPECIAL.get(func) or _SPECIAL.get(func._overloadpacket)
    if special is not None:
        return special(func, args, kwargs)
    if _INPLACE_VIEW in func.tags:
        return _restride_in_place(func, args, kwargs)
    if func in _ALLOCATING or func._overloadpacket in _ALLOCATING:
        return _allocate_like_meta(func, args, kwargs)
    if func._overloadpacket in _HOST_RESULT:
        return run_on_cpu(func, args, kwargs)
    launches = _launches(func)
    if launches and not is_allowed(f"{func._schema.name}.{func._overloadname}"):
        return cpu_fallback(func, args, kwargs, reason="not in the torch executor's allow-list")
    try:
        specs = output_specs(func, args, kwargs)
    except (NotImplementedError, torch._subclasses.fake_tensor.DataDependentOutputException):
        return cpu_fallback(func, args, kwargs, reason="output shape depends on values")
    if not _all_tensor_returns(func):
        return cpu_fallback(func, args, kwargs, reason="returns a non-tensor value")
    return _launch(func, args, kwargs, specs)


def _launch(func: Any, args: tuple, kwargs: dict, specs: list) -> Any:
    tensors = _unique_sim_tensors(args, kwargs)
    device = _common_device(func, tensors)
    returns = func._schema.returns
    named = None
    results: list[Any] = []
    fresh: list[SimTensor] = []
    for alias, spec in zip(_return_aliases(func), specs):
        if alias is None:
            made = _build(spec, lambda sp: _new_from_spec(device, sp))
            fresh.extend(made if isinstance(made, list) else [made])
            results.append(made)
            continue
        named = named or _named_arguments(func, args, kwargs)
        source = _aliased_argument(func, named, alias[0])
        if alias[1]:
            results.append(source)
        else:
            results.append(_build(spec, lambda sp, s=source: _view_from_spec(s, sp)))
    if fresh or _writes_arguments(func):
        rt = runtime()
        index = {id(t): i for i, t in enumerate(tensors)}
        attrs: dict[str, Any] = {
            "args": encode_args(args, index),
            "kwargs": encode_args(kwargs, index),
        }
        if _SEEDED in func.tags:
            attrs["rng"] = rt.next_rng(device)
        rt.client.launch(
            device,
            f"{func._schema.name}.{func._overloadname}",
            [tensor_ref(t) for t in tensors],
            [tensor_ref(t) for t in fresh if t is not None],
            attrs,
            stream=rt.state[device].stream,
        )
        if _LAUNCH_BLOCKING:
            rt.client.synchronize(device)
    return results[0] if len(returns) == 1 else tuple(results)


# -- output shapes from meta, cached ------------------------------------------------------------
# A spec is (shape, stride, storage_offset, dtype), a list of specs (Tensor[] returns) or None.
_SPEC_CACHE: dict[Any, list] = {}
_SPEC_CACHE_LIMIT = 50_000


def output_specs(func: Any, args: tuple, kwargs: dict) -> list:
    """Per return of ``func``: the spec(s) of its output(s), from meta tensors (memoized)."""
    try:
        key = (func, _key(args), _key(kwargs))
        hash(key)
    except TypeError:
        key = None
    if key is not None:
        cached = _SPEC_CACHE.get(key)
        if cached is not None:
            return cached
    meta_out = func(*_to_meta(args), **_to_meta(kwargs))
    values = meta_out if len(func._schema.returns) != 1 else (meta_out,)
    specs = [_spec(v) for v in values]
    if key is not None:
        if len(_SPEC_CACHE) >= _SPEC_CACHE_LIMIT:
            _SPEC_CACHE.clear()
        _SPEC_CACHE[key] = specs
    return specs


def _key(x: Any) -> Any:
    if isinstance(x, SimTensor):
        return (x.dtype, tuple(x.shape), x.stride(), x.storage_offset())
    if isinstance(x, list | tuple):
        return tuple(_key(v) for v in x)
    if isinstance(x, dict):
        return tuple((k, _key(v)) for k, v in x.items())
    if isinstance(x, float):
        return float  # float values never change output shapes or dtypes
    if isinstance(x, torch.Tensor):
        return ("host", x.dtype, tuple(x.shape))
    return (type(x), x)


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


def _new_from_spec(device: int, spec: tuple) -> SimTensor:
    shape, stride, offset, dtype = spec
    return new_tensor(
        device, torch.empty(0, dtype=dtype, device="meta").as_strided(shape, stride, offset)
    )


def _view_from_spec(source: Any, spec: tuple) -> SimTensor:
    if not isinstance(source, SimTensor):  # a list argument: views of its first tensor
        source = next(s for s in source if isinstance(s, SimTensor))
    shape, stride, offset, dtype = spec
    return SimTensor(source._sim, shape, stride, offset, dtype)


def _launches(func: Any) -> bool:
    """False for pure view ops: their outputs alias inputs and no value changes."""
    if _writes_arguments(func):
        return True
    return any(ret.alias_info is None for ret in func._schema.returns)


def _to_meta(tree: Any) -> Any:
    def convert(x: Any) -> Any:
        if isinstance(x, SimTensor):
            meta = torch.empty(0, dtype=x.dtype, device="meta")
            return meta.as_strided(x.shape, x.stride(), x.storage_offset())
        if isinstance(x, torch.device):
            return torch.device("meta")
        return x

    return tree_map(convert, tree)


def _all_tensor_returns(func: Any) -> bool:
    for ret in func._schema.returns:
        text = str(ret.type)
        if not text.startswith(("Tensor", "Optional[Tensor]", "List[Tensor]")):
            return False
    return True


def _named_arguments(func: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    named = dict(kwargs)
    for argument, value in zip(func._schema.arguments, args):
        named[argument.name] = value
    return named


_ALIAS_PATTERN = re.compile(r"Tensor\((\w+)(!?)\)")
_ALIASES: dict[Any, list] = {}


def _return_aliases(func: Any) -> list[tuple[set, bool] | None]:
    """Per return: (alias set, is_write), or None for a fresh tensor; reads 'Tensor(a)[]' too."""
    cached = _ALIASES.get(func)
    if cached is None:
        text = str(func._schema).split(") -> ", 1)[1].strip()
        if text.startswith("(") and text.endswith(")"):
            text = text[1:-1]
        cached = []
        for part in text.split(", "):
            match = _ALIAS_PATTERN.search(part)
            cached.append(None if match is None else ({match.group(1)}, bool(match.group(2))))
        _ALIASES[func] = cached
    return cached


def _aliased_argument(func: Any, named: dict, alias_set: set) -> Any:
    for argument in func._schema.arguments:
        info = argument.alias_info
        if info is not None and info.before_set & alias_set:
            return named[argument.name]
    raise RuntimeError(f"{func}: cannot find the argument its output aliases")


def _writes_arguments(func: Any) -> bool:
    return any(a.alias_info is not None and a.alias_info.is_write for a in func._schema.arguments)


def _unique_sim_tensors(args: tuple, kwargs: dict) -> list[SimTensor]:
    found: dict[int, SimTensor] = {}

    def visit(x: Any) -> None:
        if isinstance(x, SimTensor):
            found.setdefault(id(x), x)
        elif isinstance(x, list | tuple):
            for v in x:
                visit(v)

    visit(args)
    visit(tuple(kwargs.values()))
    return list(found.values())


def _common_device(func: Any, tensors: list[SimTensor]) -> int:
    devices = {t._sim.device for t in tensors}
    if len(devices) > 1:
        raise RuntimeError(
            f"{func}: expected all tensors on one kpt_sim device, got devices "
            f"{sorted(devices)}; move them with .to('kpt_sim:N') first"
        )
    return devices.pop() if devices else runtime().current_device


def _allocate_like_meta(func: Any, args: tuple, kwargs: dict) -> Any:
    tensors = _unique_sim_tensors(args, kwargs)
    device = tensors[0]._sim.device if tensors else runtime().current_device
    return _build(output_specs(func, args, kwargs)[0], lambda sp: _new_from_spec(device, sp))


def _restride_in_place(func: Any, args: tuple, kwargs: dict) -> Any:
    """transpose_, unsqueeze_, ...: change the wrapper's own sizes/strides; no data moves."""
    with torch._C._ExcludeDispatchKeyGuard(_PYTHON_KEY):
        return func(*args, **kwargs)


# -- ops with their own meaning on a remote device ----------------------------------------------
def _copy_(func: Any, args: tuple, kwargs: dict) -> Any:
    dst, src = args[0], args[1]
    if isinstance(dst, SimTensor) and isinstance(src, SimTensor):
        if dst._sim.device != src._sim.device:
            copy_between(src, dst)
            return dst
        return _launch(func, args, kwargs, [None])
    if isinstance(dst, SimTensor):  # host -> device
        upload_into(dst, src)
        return dst
    dst.copy_(to_host(src))  # device -> host
    return dst


def _to_copy(func: Any, args: tuple, kwargs: dict) -> Any:
    source = args[0]
    device = kwargs.get("device")
    target = torch.device(device) if device is not None else source.device
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
    return _launch(func, args, kwargs, output_specs(func, args, kwargs))


def _local_scalar_dense(func: Any, args: tuple, kwargs: dict) -> Any:
    return to_host(args[0]).item()


def _lift_fresh(func: Any, args: tuple, kwargs: dict) -> Any:
    return args[0]


def _record_stream(func: Any, args: tuple, kwargs: dict) -> Any:
    return None


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
}
