"""aten._foreach_* ops (multi-tensor optimizer math): one launch per chunk of the tensor lists.

A foreach op takes lists of tensors (and of scalars) and updates or returns one tensor per list
entry. CUDA's multi_tensor_apply runs it as one kernel per chunk of at most 110/64/48/36/30
tensors per list (by the number of lists, "depth"); the daemon takes at most MAX_REFS tensors
per launch, so a chunk here is the smaller of the two. Each chunk then goes through the ordinary
planned path (plans, caching allocator, one asynchronous launch).
"""

from __future__ import annotations

from typing import Any

from kpt.adapters.sim._plan import OpInfo
from kpt.adapters.sim._tensor import SimTensor
from kpt.sim import MAX_TENSOR_REFS

MAX_REFS = MAX_TENSOR_REFS  # tensors per launch the daemon accepts
# CUDA multi_tensor_apply's depth_to_max_tensors (ATen/native/cuda/MultiTensorApply.cuh).
CUDA_MAX_TENSORS = (110, 64, 48, 36, 30)
# Fused Adam(W) pass their step counts beside the tensor lists, which alone set the depth
# (multi_tensor_apply_for_fused_optimizer<4>: params, grads, exp_avgs, exp_avg_sqs).
STEPS_ARGUMENT = {"_fused_adamw_": 5, "_fused_adam_": 5}
CHUNK_ELEMENTS = 65536  # and its kChunkSize: one thread block per chunk of each tensor


def thread_blocks(tensors: list) -> int:
    """The blocks one multi_tensor_apply launch over these tensors runs: one per chunk."""
    return sum(-(-t.numel() // CHUNK_ELEMENTS) for t in tensors)


def is_foreach(func: Any) -> bool:
    return func._overloadpacket.__name__.startswith("_foreach_")


def chunk_length(func: Any, args: tuple, kwargs: dict, info: OpInfo) -> tuple[int, int]:
    """(list length, entries per launch) of one foreach call (``info``: the op's OpInfo)."""
    lists = [v for v in (*args, *kwargs.values()) if _is_tensor_list(v)]
    if not lists:
        return 0, 0
    length = len(lists[0])
    singles = sum(isinstance(v, SimTensor) for v in (*args, *kwargs.values()))
    fresh_lists = sum(alias is None for alias in info.aliases)
    depth = len(lists) + fresh_lists  # every list's tensors are refs of the daemon's launch
    steps_at = STEPS_ARGUMENT.get(func._overloadpacket.__name__)
    beside = int(steps_at is not None and len(args) > steps_at and _is_tensor_list(args[steps_at]))
    cuda = CUDA_MAX_TENSORS[min(depth - beside, len(CUDA_MAX_TENSORS)) - 1]
    return length, max(1, min(cuda, (MAX_REFS - singles) // depth))


def run_chunked(planned: Any, func: Any, args: tuple, kwargs: dict, info: OpInfo) -> Any:
    """Run ``planned`` on consecutive slices of every per-entry list; join the results."""
    length, per_launch = chunk_length(func, args, kwargs, info)
    if length <= per_launch:
        return planned(func, args, kwargs)
    results = []
    for start in range(0, length, per_launch):
        part = slice(start, start + per_launch)
        chunk_args = tuple(_slice(v, length, part) for v in args)
        chunk_kwargs = {k: _slice(v, length, part) for k, v in kwargs.items()}
        results.append(planned(func, chunk_args, chunk_kwargs))
    if results[0] is None:  # in-place ops ("-> ()")
        return None
    if isinstance(results[0], list):  # one Tensor[] return
        return [t for chunk in results for t in chunk]
    return tuple([t for chunk in results for t in chunk[i]] for i in range(len(results[0])))


def _is_tensor_list(value: Any) -> bool:
    return type(value) in (list, tuple) and any(isinstance(v, SimTensor) for v in value)


def _slice(value: Any, length: int, part: slice) -> Any:
    """Per-entry lists (tensors, scalars) are sliced; everything else is passed whole."""
    if type(value) in (list, tuple) and len(value) == length:
        return list(value[part])
    return value
