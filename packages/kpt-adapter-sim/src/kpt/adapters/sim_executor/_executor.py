"""The daemon-side torch executor (entry point ``kpt.sim.executors: torch``).

It runs ``torch.ops.aten.<name>.<overload>`` on CPU views of buffers it allocated itself, looked up
by name in ALLOWED_OPS. Outputs that the op's schema marks as fresh (no alias annotation) are
copied into the buffers the client allocated; in-place and out= arguments are written directly,
because every input is a view of daemon storage.
"""

from __future__ import annotations

import weakref
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import flop_registry

from kpt.adapters.sim_executor import _rnn_layers  # noqa: F401  (defines torch.ops.kpt.*)
from kpt.adapters.sim_executor._allowlist import is_allowed
from kpt.adapters.sim_executor._estimate import estimate_cost
from kpt.adapters.sim_executor._wirefmt import DTYPES_BY_NAME, decode_args
from kpt.sim import DTYPE_SIZES, OpCost

# Scalar seed mixing (a 64-bit LCG step) so that (seed, counter) pairs give distinct streams.
_SEED_MULTIPLIER = 6364136223846793005
_SEED_MASK = (1 << 63) - 1


@lru_cache(maxsize=4096)
def resolve_op(name: str) -> torch._ops.OpOverload:
    """'aten::add.Tensor' -> torch.ops.aten.add.Tensor, only for allow-listed names (and
    kpt_sim's own ops: 'kpt::rnn_layer' -> torch.ops.kpt.rnn_layer.default)."""
    if not isinstance(name, str) or not is_allowed(name):
        raise ValueError(
            f"op {name!r} is not in the kpt_sim torch executor's allow-list; "
            "the client runs such ops on its CPU instead"
        )
    namespace, _, rest = name.partition("::")
    packet_name, _, overload = rest.partition(".")
    packet = getattr(getattr(torch.ops, namespace), packet_name)
    try:
        return getattr(packet, overload or "default")
    except AttributeError:
        raise ValueError(
            f"op {name!r}: {namespace}::{packet_name} has no overload {overload!r}; "
            f"overloads: {', '.join(packet.overloads())}"
        ) from None


def fresh_outputs(op: torch._ops.OpOverload, results: Any) -> list[torch.Tensor | None]:
    """The tensors among an op's results that are new (not views or in-place/out arguments);
    None where the op left a tensor result undefined (its meta kernel may give an empty one:
    _native_multi_head_attention's weights without need_weights)."""
    returns = op._schema.returns
    values = results if isinstance(results, tuple | list) and len(returns) != 1 else (results,)
    fresh: list[torch.Tensor | None] = []
    for ret, value in zip(returns, values):
        if ret.alias_info is not None:
            continue
        if isinstance(value, torch.Tensor) or value is None:
            fresh.append(value)
        elif isinstance(value, list | tuple):
            fresh.extend(v for v in value if isinstance(v, torch.Tensor))
    return fresh


def rng_seed(seed: int, counter: int) -> int:
    return (seed * _SEED_MULTIPLIER + counter) & _SEED_MASK


def _weight_int8pack_mm(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor):
    return torch.mm(x, weight.to(x.dtype).t()) * scales


def _scaled_mm(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None,
               use_fast_accum=False):  # fmt: skip
    out = torch.mm(a.float() * scale_a, b.float() * scale_b)
    if bias is not None:
        out = out + bias
    return out.to(out_dtype or a.dtype)


# Quantized GEMMs computed from their definitions: the CPU's own kernels are narrower than the
# ops' contracts (torch 2.13's _weight_int8pack_mm crashed the process for K = 60 and gave
# wrong values for K = 8, 24 and 200), and a client's launch must never take the daemon down.
REFERENCE_KERNELS = {
    torch.ops.aten._weight_int8pack_mm.default: _weight_int8pack_mm,
    torch.ops.aten._scaled_mm.default: _scaled_mm,
}


# Bytes per element by wire dtype name (kpt.sim's table): element_size() per view cost ~2 us.
ITEMSIZE = DTYPE_SIZES


# Launches named "triton::<kernel>" only charge time: a Triton kernel that ran under the host
# interpreter already wrote its results (kpt.hal.run_triton -> SimAdapter.on_host_kernel).
HOST_KERNEL_OP_PREFIX = "triton::"


class TorchExecutor:
    """kpt-sim executor computing values with torch on the daemon's CPU."""

    name = "torch"

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._typed_views: dict[int, dict[str, torch.Tensor]] = {}  # id(storage) -> dtype -> alias
        # torch's thread count is the process's: set it only when asked (the daemon's
        # --executor-option threads=N). An executor made inside another process (a test, an
        # estimate) must not change how that process computes: fp32 kernels such as CPU flash
        # attention round differently with a different thread count.
        if "threads" in options:
            torch.set_num_threads(max(1, int(options["threads"])))

    # -- storage -----------------------------------------------------------------------------
    def allocate(self, nbytes: int) -> torch.Tensor:
        # Zeroed: reused host memory may hold another client's freed values (Executor contract).
        # torch.zeros, not a calloc'd numpy array: out= ops (mse_loss.out, ...) resize their
        # output's storage, which a numpy-backed storage refuses. Its cost against torch.empty:
        # benchmarks/bench_zeroed_alloc.py.
        return torch.zeros(int(nbytes), dtype=torch.uint8)

    def write(self, storage: torch.Tensor, offset: int, data: memoryview) -> None:
        if len(data) == 0:
            return
        source = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        storage[offset : offset + source.numel()].copy_(source)

    def read(self, storage: torch.Tensor, offset: int, nbytes: int) -> np.ndarray:
        # clone() first: numpy() marks the storage it exposes as not resizable, and out= ops
        # whose CPU kernels resize their output on the way (mse_loss.out) would then fail on
        # every buffer a client had read (the same one copy as numpy().copy()).
        return storage[offset : offset + nbytes].clone().numpy()

    # -- compute -----------------------------------------------------------------------------
    def view(self, view: Any) -> torch.Tensor:
        """A CPU tensor over a buffer's bytes, as the View describes (no copy)."""
        itemsize = ITEMSIZE[view.dtype]
        if view.offset % itemsize:
            raise ValueError(f"byte offset {view.offset} is not a multiple of {view.dtype}'s size")
        typed = self._typed(view.storage, view.dtype)
        return typed.as_strided(view.shape, view.strides, view.offset // itemsize)

    def _typed(self, storage: torch.Tensor, dtype_name: str) -> torch.Tensor:
        # One typed alias per (buffer, dtype), kept until the buffer's storage is dropped: a
        # slice + view per tensor per op was half of the executor's time on small ops.
        key = id(storage)
        per_buffer = self._typed_views.get(key)
        if per_buffer is None:
            per_buffer = self._typed_views[key] = {}
            weakref.finalize(storage, self._typed_views.pop, key, None)
        typed = per_buffer.get(dtype_name)
        if typed is None:
            dtype = DTYPES_BY_NAME[dtype_name]
            usable = storage.numel() // dtype.itemsize
            # set_ shares the storage without keeping the uint8 tensor alive (a view would, and
            # then the finalizer above could never run).
            typed = torch.empty(0, dtype=dtype).set_(storage.untyped_storage(), 0, (usable,))
            per_buffer[dtype_name] = typed
        return typed

    def run(self, op: str, inputs: list, outputs: list, attrs: dict) -> None:
        if op == "copy":  # the daemon's device-to-device copy
            self.view(outputs[0]).copy_(self.view(inputs[0]))
            return
        if op.startswith(HOST_KERNEL_OP_PREFIX):
            if inputs or outputs:
                raise ValueError(f"op {op!r} only charges time; it takes no tensors")
            return
        overload = resolve_op(op)
        tensors = [self.view(v) for v in inputs]
        args = decode_args(attrs.get("args", []), tensors)
        kwargs = decode_args(attrs.get("kwargs", {}), tensors)
        if "rng" in attrs:
            torch.manual_seed(rng_seed(*attrs["rng"]))
        if not tensors or _packet(op) in SIZED_BY_ARGUMENTS:
            _check_results_fit(op, overload, args, kwargs, outputs)
        try:
            result = REFERENCE_KERNELS.get(overload, overload)(*args, **kwargs)
        except (RuntimeError, TypeError, IndexError) as exc:
            shapes = [list(v.shape) for v in inputs]
            raise ValueError(f"{op} on inputs of shapes {shapes} failed: {exc}") from exc
        fresh = fresh_outputs(overload, result)
        if len(fresh) != len(outputs):  # the client sent no buffer for the undefined ones
            fresh = [value for value in fresh if value is not None]
        if len(fresh) != len(outputs):
            raise ValueError(
                f"op {op!r} produced {len(fresh)} new tensors but {len(outputs)} outputs were sent"
            )
        for value, target in zip(fresh, outputs):
            if value is None or (value.numel() == 0 and _numel(target) != 0):
                continue  # an unused output (e.g. batch-norm statistics in eval mode)
            self.view(target).copy_(value)

    def estimate(self, op: str, inputs: list, outputs: list, attrs: dict) -> OpCost:
        """Class, FLOPs, bytes, dtype and shape hint (kpt.sim.OpCost's forms) of one launch."""
        return launch_cost(op, inputs, outputs, attrs)


def launch_cost(op: str, inputs: list, outputs: list, attrs: dict) -> OpCost:
    """One launch's OpCost from its Views (kpt.sim.View) and encoded arguments: a pure function
    of them, so the client works it out before launching and the daemon the same way."""
    return estimate_cost(op, inputs, outputs, attrs, _matmul_like_flops)


# Ops whose results can be far larger than their inputs: the size comes from their arguments.
SIZED_BY_ARGUMENTS = frozenset({
    "repeat", "repeat_interleave", "tile", "kron", "outer", "cartesian_prod", "constant_pad_nd",
    "pad", "new_full", "new_zeros", "new_ones", "new_empty", "new_empty_strided", "one_hot",
    "expand_copy", "im2col", "upsample_nearest2d", "upsample_bilinear2d", "upsample_nearest1d",
})  # fmt: skip
_META = torch.device("meta")


def _on_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=_META)
    if isinstance(value, torch.device):
        return _META
    if isinstance(value, list | tuple):
        return type(value)(_on_meta(v) for v in value)
    if isinstance(value, dict):
        return {k: _on_meta(v) for k, v in value.items()}
    return value


def _check_results_fit(op: str, overload: Any, args: list, kwargs: dict, outputs: list) -> None:
    """Refuse, before computing, an op whose results would not fit the buffers sent for them:
    arange(0, 2**40) must not make the daemon's host build a terabyte first (the shapes come
    from running the op on the meta device, which allocates nothing)."""
    kwargs = _on_meta(kwargs)
    if any(a.name == "device" for a in overload._schema.arguments):
        kwargs["device"] = _META  # a factory op: its result is made on the meta device
    try:
        shapes = fresh_outputs(overload, overload(*_on_meta(args), **kwargs))
    except Exception:  # no meta kernel: the real run below reports what is wrong
        return
    for value, target in zip(shapes, outputs):
        if value is None:
            continue
        produced = value.numel() * value.element_size()
        room = target.nbytes
        if value.numel() and produced > room:
            raise ValueError(
                f"op {op!r} would produce {list(value.shape)} ({produced} bytes) but its output "
                f"holds {list(target.shape)} ({room} bytes); refused before computing"
            )


def _packet(op: str) -> str:
    return op.removeprefix("aten::").split(".", 1)[0]


def _numel(view: Any) -> int:
    return int(np.prod(view.shape, dtype=np.int64)) if len(view.shape) else 1


def _nbytes(view: Any) -> int:
    return _numel(view) * ITEMSIZE[view.dtype]


def _matmul_like_flops(op: str, inputs: list, outputs: list, attrs: dict) -> int:
    """FLOPs from torch's own flop formulas (mm, bmm, addmm, convolution, attention, ...)."""
    try:
        overload = resolve_op(op)
    except ValueError:
        return 0
    formula = flop_registry.get(overload._overloadpacket)
    if formula is None:
        return 0
    metas = [
        torch.empty_strided(tuple(v.shape), tuple(v.strides), dtype=DTYPES_BY_NAME[v.dtype],
                            device="meta")
        for v in inputs
    ]  # fmt: skip
    outs = [
        torch.empty(tuple(v.shape), dtype=DTYPES_BY_NAME[v.dtype], device="meta") for v in outputs
    ]
    try:
        args = decode_args(attrs.get("args", []), metas)
        kwargs = decode_args(attrs.get("kwargs", {}), metas)
        out_val = outs[0] if len(outs) == 1 else tuple(outs)
        return int(formula(*args, **kwargs, out_val=out_val))
    except Exception:  # a formula that cannot read these shapes: charge it as elementwise
        return 0
