"""Launch plans: what dispatch works out once per (op, argument structure) and then reuses.

A training step repeats the same few hundred (op, shapes) pairs every step. Everything about such a
call that does not depend on the tensors' identities is computed once and kept in a plan: output
shapes from meta, which outputs are fresh and which alias an argument, the wire form of every
tensor reference but its buffer id, the encoded arguments (when they hold no per-call floats), and
the op's cost. Dispatching a planned call is then a dict lookup, allocations from the caching
allocator, and one queued launch. The tables (plans, op infos, out= overloads) are the Runtime's
``PlanCache``, passed in by the caller.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import torch

from kpt.adapters.sim._fallback import count_estimate_failure
from kpt.adapters.sim._plan_cache import PlanCache
from kpt.adapters.sim._tensor import SimTensor
from kpt.adapters.sim_executor import dtype_name, encode_args, launch_cost
from kpt.sim import View

_SEEDED = torch.Tag.nondeterministic_seeded
_ALIAS_PATTERN = re.compile(r"Tensor\((\w+)(!?)\)")
PLAN_CACHE_LIMIT = 50_000  # plans kept; a program with more distinct signatures starts over


class OpInfo(NamedTuple):
    """What an op's schema says, read once per OpOverload."""

    name: str  # "aten::add.Tensor": the name the daemon's executor looks up
    single: bool  # one return (the result is not a tuple)
    aliases: list  # per return: None (fresh) or (alias set, is_write)
    writes: bool  # mutates an argument (in-place or out=)
    seeded: bool  # a random op: carries (seed, counter)
    launches: bool  # computes something (False for pure views)
    tensor_returns: bool  # every return is a tensor or list of tensors
    exact_floats: bool  # float arguments may change output shapes: key plans by their values


def op_info(func: Any, cache: PlanCache) -> OpInfo:
    """What ``func``'s schema says, worked out once per op (kept in ``cache``)."""
    info = cache.op_infos.get(func)
    if info is None:
        info = cache.op_infos[func] = _read_schema(func)
    return info


def _read_schema(func: Any) -> OpInfo:
    schema = func._schema
    writes = any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
    returns = schema.returns
    return OpInfo(
        name=f"{schema.name}.{func._overloadname}",
        single=len(returns) == 1,
        aliases=_return_aliases(schema),
        writes=writes,
        seeded=_SEEDED in func.tags,
        launches=writes or any(r.alias_info is None for r in returns),
        tensor_returns=all(
            str(r.type).startswith(("Tensor", "Optional[Tensor]", "List[Tensor]")) for r in returns
        ),
        exact_floats=_floats_change_shapes(func),
    )


# Ops whose Scalar arguments set the output's length.
_RANGE_PACKETS = frozenset({"arange", "range", "linspace", "logspace"})


def _floats_change_shapes(func: Any) -> bool:
    """Scale factors (upsampling) and ranges: their float values decide the output's shape."""
    if func._overloadpacket.__name__ in _RANGE_PACKETS:
        return True
    for argument in func._schema.arguments:
        text = str(argument.type)
        if "float[]" in text or ("float" in text and argument.name.startswith("scale")):
            return True
    return False


def _return_aliases(schema: Any) -> list[tuple[set, bool] | None]:
    """Per return: (alias set, is_write), or None for a fresh tensor; reads 'Tensor(a)[]' too."""
    if not schema.returns:  # "-> ()" (in-place _foreach_ ops): nothing returned
        return []
    text = str(schema).split(") -> ", 1)[1].strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    aliases: list[tuple[set, bool] | None] = []
    for part in text.split(", "):
        match = _ALIAS_PATTERN.search(part)
        aliases.append(None if match is None else ({match.group(1)}, bool(match.group(2))))
    return aliases


# -- the signature of a call: hashable, identity-aware, float values left out --------------------
def signature(args: tuple, kwargs: dict, tensors: list, exact_floats: bool = False) -> tuple:
    """A key for the call's structure; fills ``tensors`` with its distinct kpt_sim tensors.

    A tensor seen before in the same call is keyed by its position (x + x differs from x + y).
    Floats key by type only (an optimizer's per-step floats reuse one plan): they change no
    output shape, dtype or cost, except in ops flagged ``exact_floats`` (then by value).
    """
    parts: list = []
    leaf = _exact_leaf if exact_floats else _leaf
    for value in args:
        leaf(value, parts, tensors)
    if kwargs:
        for name, value in kwargs.items():
            parts.append(name)
            leaf(value, parts, tensors)
    return tuple(parts)


def _exact_leaf(x: Any, parts: list, tensors: list) -> None:
    if type(x) is float:
        parts.append((float, x))
    elif type(x) is list or type(x) is tuple:
        parts.append((type(x), len(x)))
        for v in x:
            _exact_leaf(v, parts, tensors)
    else:
        _leaf(x, parts, tensors)


def _leaf(x: Any, parts: list, tensors: list) -> None:
    if isinstance(x, SimTensor):
        for i, seen in enumerate(tensors):
            if seen is x:
                parts.append(i)
                return
        tensors.append(x)
        parts.append((x.dtype, x.shape, x.stride(), x.storage_offset()))
    elif type(x) is float:
        parts.append(float)
    elif type(x) is list or type(x) is tuple:
        parts.append((type(x), len(x)))
        for v in x:
            _leaf(v, parts, tensors)
    elif isinstance(x, torch.Tensor):
        parts.append(("host", x.dtype, x.shape))
    else:
        parts.append((type(x), x))  # ints, bools, None, dtypes, devices: part of the structure


def _per_call_values(tree: Any) -> bool:
    """Whether encoded arguments change between calls of one signature (floats, host scalars)."""
    if type(tree) is float or type(tree) is complex:
        return True
    if isinstance(tree, torch.Tensor):
        return not isinstance(tree, SimTensor)
    if isinstance(tree, list | tuple):
        return any(_per_call_values(v) for v in tree)
    if isinstance(tree, dict):
        return any(_per_call_values(v) for v in tree.values())
    return False


# -- plans ----------------------------------------------------------------------------------------
class OutSpec(NamedTuple):
    """One fresh output: its layout, the bytes to allocate, and its wire ref after the buffer id."""

    shape: tuple
    stride: tuple
    offset: int
    dtype: torch.dtype
    nbytes: int
    wire_tail: list


class Plan(NamedTuple):
    info: OpInfo
    results: list  # per return: ("new", spec(s)), ("same", where) or ("view", where, spec(s))
    fresh: int  # how many fresh outputs
    launch: bool  # send a launch (False: views, or allocation only)
    input_tails: list  # per distinct input tensor: its wire ref after the buffer id
    attrs: dict | None  # encoded args/kwargs when constant for the signature, else None
    cost: list | None  # wire OpCost, or None for the daemon to estimate
    op: str  # the name launched: info.name, or its out= variant's
    out_index: int | None  # out= variant: the input position of the fresh output, else None
    out_name: str  # out= variant: the keyword of its output argument ("out", "grad_input")


# -- out= variants: the daemon computes straight into the output's buffer -----------------------
def out_variant(func: Any, info: OpInfo, cache: PlanCache) -> tuple[str, str] | None:
    """(name, output keyword) of ``func``'s out= overload: the same arguments plus one written
    keyword-only tensor (``out``, or ``grad_input`` for backward ops); None if it has none.

    Launched instead of the functional op, the executor writes the result into the buffer the
    client allocated, rather than computing into a temporary and copying it there (a quarter of
    the daemon's time in a training step). Looked up once per op (kept in ``cache``).
    """
    if func in cache.out_variants:
        return cache.out_variants[func]
    found = None
    if info.single and info.aliases == [None] and not info.writes and not info.seeded:
        wanted = [(a.name, str(a.type)) for a in func._schema.arguments]
        packet = func._overloadpacket
        for name in packet.overloads():
            schema = getattr(packet, name)._schema
            writes = [a for a in schema.arguments if a.alias_info is not None]
            rest = [(a.name, str(a.type)) for a in schema.arguments if a.alias_info is None]
            if (len(writes) == 1 and writes[0].kwarg_only and writes[0].alias_info.is_write
                    and rest == wanted and len(schema.returns) == 1):  # fmt: skip
                found = (f"{schema.name}.{name}", writes[0].name)
                break
    cache.out_variants[func] = found
    return found


def out_spec(spec: tuple) -> OutSpec:
    shape, stride, offset, dtype = spec
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = _byte_end(shape, stride, offset, itemsize)
    tail = [offset * itemsize, dtype_name(dtype), list(shape), list(stride)]
    return OutSpec(tuple(shape), tuple(stride), offset, dtype, max(nbytes, 1), tail)


def _byte_end(shape: tuple, stride: tuple, offset: int, itemsize: int) -> int:
    if any(size == 0 for size in shape):
        return offset * itemsize
    high = sum((size - 1) * st for size, st in zip(shape, stride) if st > 0)
    return (offset + high + 1) * itemsize


def input_tail(t: SimTensor) -> list:
    return [t.storage_offset() * t.element_size(), dtype_name(t.dtype), list(t.shape),
            list(t.stride())]  # fmt: skip


def make_plan(
    func: Any,
    info: OpInfo,
    args: tuple,
    kwargs: dict,
    tensors: list,
    specs: list,
    *,
    launch: bool,
    cache: PlanCache,
) -> Plan:
    named = None
    results: list = []
    fresh = 0
    for alias, spec in zip(info.aliases, specs):
        if alias is None:
            made = _map_spec(spec, out_spec)
            fresh += len(made) if isinstance(made, list) else made is not None
            results.append(("new", made))
            continue
        named = named or _argument_positions(func, args, kwargs)
        where = _aliased_argument(func, named, alias[0])
        results.append(("same", where) if alias[1] else ("view", where, spec))
    launch = launch and (fresh > 0 or info.writes)
    attrs = cost = out_index = None
    op, out_name = info.name, "out"
    if launch:
        variant = out_variant(func, info, cache) if fresh == 1 and results[0][0] == "new" else None
        if variant is not None and not isinstance(results[0][1], list):
            (op, out_name), out_index = variant, len(tensors)
        if not _per_call_values((args, kwargs)):
            attrs = encode_attrs(args, kwargs, tensors, out_index, out_name)
        cost = _estimate(info.name, tensors, results, args, kwargs)
    tails = [input_tail(t) for t in tensors] if launch else []
    return Plan(info, results, fresh, launch, tails, attrs, cost, op, out_index, out_name)


def encode_attrs(
    args: tuple, kwargs: dict, tensors: list, out_index: int | None = None, out_name: str = "out"
) -> dict:
    index = {id(t): i for i, t in enumerate(tensors)}
    encoded = {"args": encode_args(args, index), "kwargs": encode_args(kwargs, index)}
    if out_index is not None:
        encoded["kwargs"][out_name] = {"__t": out_index}
    return encoded


def _map_spec(spec: Any, make: Any) -> Any:
    if spec is None:
        return None
    if isinstance(spec, list):
        return [_map_spec(s, make) for s in spec]
    return make(spec)


def _argument_positions(func: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Argument name -> where to find it in a call: ("arg", i) or ("kw", name)."""
    where: dict[str, Any] = {name: ("kw", name) for name in kwargs}
    for i, argument in enumerate(func._schema.arguments[: len(args)]):
        where[argument.name] = ("arg", i)
    return where


def _aliased_argument(func: Any, where: dict, alias_set: set) -> Any:
    for argument in func._schema.arguments:
        info = argument.alias_info
        if info is not None and info.before_set & alias_set and argument.name in where:
            return where[argument.name]
    raise RuntimeError(f"{func}: cannot find the argument its output aliases")


def fetch(where: Any, args: tuple, kwargs: dict) -> Any:
    return args[where[1]] if where[0] == "arg" else kwargs[where[1]]


def _estimate(op: str, tensors: list, results: list, args: tuple, kwargs: dict) -> list | None:
    """The op's cost, worked out once here with the executor's own formula (else the daemon)."""
    try:
        inputs = [View(None, *input_tail(t)) for t in tensors]
        outputs = []
        for result in results:
            if result[0] == "new" and result[1] is not None:
                for spec in result[1] if isinstance(result[1], list) else [result[1]]:
                    if spec is not None:
                        outputs.append(View(None, *spec.wire_tail))
        attrs = encode_attrs(args, kwargs, tensors)
        cost = launch_cost(op, inputs, outputs, attrs)
    except Exception as error:  # a formula that cannot read this call: counted, never silent
        count_estimate_failure(op, error)
        return None
    return cost.to_wire()
