"""The fused kernels PyTorch runs on GPUs, run and costed as such on kpt_sim.

- attention: ``F.scaled_dot_product_attention`` through PyTorch's PrivateUse1 hook
  (``_fused_attention.py``): one flash-attention launch forward, one backward;
- optimizers: ``torch.optim.AdamW(fused=True)``, ``Adam(fused=True)``, ``SGD(fused=True)`` run
  ``aten::_fused_adamw_`` / ``_fused_adam_`` / ``_fused_sgd_`` on the device, one launch per
  chunk of the tensor lists as CUDA's multi_tensor_apply, each costed as one multi-tensor
  kernel (a block per 65536-element chunk) that reads and writes every list it updates;
- LSTM: one ``mkldnn_rnn_layer`` launch per layer forward, one backward; GRU and Elman RNN
  layers: one ``kpt::rnn_layer`` launch per layer forward, one backward (``_fused_rnn.py``);
- foreach: torch picks foreach kernels by default for kpt_sim parameters, as on CUDA
  (``register_foreach_support``), and each ``_foreach_*`` launch is costed as one
  multi-tensor kernel (its in-place writes counted), not as a reduction.

``FusedKernels(new_plan, run)`` gives the dispatcher its handlers and registers the autograd
kernels of attention and LSTM (into the library ``_device.register()`` keeps); the plans made
here are the dispatcher's own (``_dispatch._new_plan``) with the cost replaced, kept per call
signature in the Runtime's PlanCache (``fused_plans``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from kpt.adapters.sim._fallback import cpu_fallback
from kpt.adapters.sim._foreach import run_chunked, thread_blocks
from kpt.adapters.sim._fused_attention import FusedAttention
from kpt.adapters.sim._fused_rnn import FusedCells, FusedLSTM
from kpt.adapters.sim._plan import PLAN_CACHE_LIMIT, make_plan, op_info, signature
from kpt.adapters.sim._plan_cache import remember
from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim._tensor import SimTensor
from kpt.adapters.sim_executor import ALLOWED_OPS

aten = torch.ops.aten
# Fused optimizer -> how many of its per-parameter lists it reads and writes per element.
# AdamW: reads param, grad, exp_avg, exp_avg_sq; writes param, exp_avg, exp_avg_sq.
FUSED_OPTIMIZER_PASSES = {"_fused_adamw_": 7, "_fused_adam_": 7, "_fused_sgd_": 5}
FLOPS_PER_ELEMENT = {"_fused_adamw_": 12, "_fused_adam_": 11, "_fused_sgd_": 4}
ITEMSIZE = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.float64: 8}

CostFn = Callable[[Any, tuple, dict, list], list]


class CostedLauncher:
    """Launches an op through the dispatcher's plans, with a cost worked out here."""

    def __init__(self, new_plan: Any, run: Any) -> None:
        self._new_plan = new_plan  # _dispatch._new_plan(func, args, kwargs, tensors, cache)
        self._run = run  # _dispatch._run(plan, args, kwargs, tensors, rt)

    def launch(self, cost: CostFn, func: Any, args: tuple, kwargs: dict, adjust: Any = None) -> Any:
        """Run ``func`` as one launch costed by ``cost``; ``adjust(plan, func, args, kwargs)``
        may correct a new plan first (an output whose size meta cannot know)."""
        rt = runtime()
        cache = rt.plans
        tensors: list[SimTensor] = []
        try:
            key = (func, signature(args, kwargs, tensors))
            plan = cache.fused_plans.get(key)
        except TypeError:  # an unhashable argument: plan this call alone
            key = plan = None
        if plan is None:
            if func._schema.returns:
                plan = self._new_plan(func, args, kwargs, tensors, cache)
            else:  # in place, "-> ()": no outputs to shape on meta (_fused_sgd_ has no meta)
                info = op_info(func, cache)
                plan = make_plan(func, info, args, kwargs, tensors, [], launch=True, cache=cache)
            if type(plan) is not str and plan.launch:
                if adjust is not None:
                    plan = adjust(plan, func, args, kwargs)
                plan = plan._replace(cost=cost(func, args, kwargs, tensors))
            if key is not None:
                remember(cache.fused_plans, key, plan, PLAN_CACHE_LIMIT)
        if type(plan) is str:  # the reason this call runs on the CPU
            return cpu_fallback(func, args, kwargs, reason=plan)
        return self._run(plan, args, kwargs, tensors, rt)

    def chunked(self, cost: CostFn) -> Any:
        """A handler running tensor-list ops one launch per chunk, each costed by ``cost``."""

        def handler(func: Any, args: tuple, kwargs: dict) -> Any:
            info = op_info(func, runtime().plans)
            return run_chunked(partial(self.launch, cost), func, args, kwargs, info)

        return handler


def _packet(func: Any) -> str:
    return func._overloadpacket.__name__


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_list(args: tuple) -> list:
    return next((v for v in args if type(v) in (list, tuple) and v), [])


def fused_optimizer_cost(func: Any, args: tuple, kwargs: dict, tensors: list) -> list:
    """One memory-bound kernel over the chunk: every list it updates read and written."""
    params = [t for t in _first_list(args) if isinstance(t, torch.Tensor)]
    elements = sum(t.numel() for t in params)
    itemsize = ITEMSIZE.get(params[0].dtype, 4) if params else 4
    packet = _packet(func)
    passes = FUSED_OPTIMIZER_PASSES.get(packet, 5)
    if packet == "_fused_sgd_" and not args[2]:  # no momentum buffers: read p, g; write p
        passes = 3
    dtype = _dtype_name(params[0].dtype) if params else "float32"
    return ["multi_tensor", float(FLOPS_PER_ELEMENT.get(packet, 4) * elements),
            float(passes * itemsize * elements), dtype, [thread_blocks(params)]]  # fmt: skip


def foreach_cost(func: Any, args: tuple, kwargs: dict, tensors: list) -> list:
    """One multi_tensor_apply kernel: every list read once; in-place or fresh outputs written.

    ``_foreach_norm`` reduces each tensor to one value (a reduction over the list).
    """
    packet = _packet(func)
    lists = [v for v in (*args, *kwargs.values()) if type(v) in (list, tuple) and v
             and isinstance(v[0], torch.Tensor)]  # fmt: skip
    read = sum(t.numel() * t.element_size() for lst in lists for t in lst)
    first = lists[0] if lists else []
    elements = sum(t.numel() for t in first)
    itemsize = first[0].element_size() if first else 4
    dtype = _dtype_name(first[0].dtype) if first else "float32"
    if packet == "_foreach_norm":
        return ["reduction", float(elements), float(read), dtype, None]
    written = elements * itemsize  # the result list (fresh or the first list, in place)
    if packet in ("_foreach_zero_", "_foreach_copy_"):
        read = 0 if packet == "_foreach_zero_" else read - elements * itemsize
    return ["multi_tensor", float(elements), float(read + written), dtype, [thread_blocks(first)]]


class FusedKernels:
    """The fused kernels: handlers for the dispatcher, autograd kernels for torch."""

    def __init__(self, new_plan: Any, run: Any) -> None:
        self._launcher = CostedLauncher(new_plan, run)
        self._attention = FusedAttention(self._launcher)
        self._lstm = FusedLSTM(self._launcher)
        self._cells = FusedCells(self._launcher)

    def handlers(self) -> dict[Any, Any]:
        """op or packet -> handler, for the dispatcher's table of special ops."""
        handlers: dict[Any, Any] = dict(self._attention.handlers())
        handlers.update(self._lstm.handlers())
        handlers.update(self._cells.handlers())
        fused = self._launcher.chunked(fused_optimizer_cost)
        for name in FUSED_OPTIMIZER_PASSES:
            handlers[getattr(aten, name)] = fused
        each = self._launcher.chunked(foreach_cost)
        for name in sorted(ALLOWED_OPS):
            if name.startswith("_foreach_"):
                handlers[getattr(aten, name)] = each
        return handlers

    def register(self, library: torch.library.Library) -> None:
        """The composites torch would run cell by cell or on its math path, registered for
        AutogradPrivateUse1 in ``library`` (they last as long as it does)."""
        self._attention.register(library)
        self._lstm.register(library)
        self._cells.register(library)


def register_foreach_support() -> None:
    """Let torch pick foreach and fused optimizer kernels for kpt_sim tensors, as on CUDA.

    torch lists "kpt_sim" among the devices with foreach and fused kernels once the PrivateUse1
    backend is renamed (``_get_foreach_kernels_supported_devices``), but it also requires
    ``type(p)`` to be a plain Tensor or Parameter; a kpt_sim parameter is a SimTensor. torch's
    own DTensor is added to the same two lists (torch/distributed/tensor/__init__.py).
    """
    from torch.optim import optimizer
    from torch.utils import _foreach_utils

    for supported in (optimizer._foreach_supported_types, _foreach_utils._foreach_supported_types):
        if SimTensor not in supported:
            supported.append(SimTensor)
