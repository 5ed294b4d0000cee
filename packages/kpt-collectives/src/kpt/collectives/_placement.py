"""Heterogeneous data parallelism: batches in proportion to speed, gradients weighted to match.

With per-rank batches b_r summing to B and each rank's loss the mean over its own batch, the
gradient of the mean loss over all B samples is sum_r (b_r / B) * grad_r. batch_weighted_hook
does exactly that inside DDP's all-reduce, so the update equals one device's on the whole batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist


def split_batch(global_batch: int, ranks: Sequence[Any]) -> list[int]:
    """Per-rank batch sizes summing to `global_batch`, proportional to each rank's throughput.

    ranks: throughputs (samples/s, any common unit), or objects with a ``throughput`` attribute
    or key. Largest remainders get the leftover samples; every rank gets at least one sample
    when there are enough."""
    return proportional_split(global_batch, ranks, "split_batch", "global_batch")


def proportional_split(total: int, ranks: Sequence[Any], caller: str, what: str) -> list[int]:
    """`total` split in proportion to the ranks' throughputs (split_batch, shard_sizes)."""
    speeds = [_throughput(r, i, caller) for i, r in enumerate(ranks)]
    if not speeds:
        raise ValueError(f"{caller}: give at least one rank")
    if type(total) is not int or total < 0:
        raise ValueError(f"{caller}: {what} = {total!r} must be an int >= 0")
    whole = sum(speeds)
    exact = [total * s / whole for s in speeds]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(speeds)), key=lambda i: (sizes[i] - exact[i], -speeds[i]))
    for i in by_remainder[: total - sum(sizes)]:
        sizes[i] += 1
    if total >= len(sizes):  # a rank with nothing would still wait in every collective
        for i in range(len(sizes)):
            if sizes[i] == 0:
                donor = max(range(len(sizes)), key=lambda j: sizes[j])
                sizes[donor] -= 1
                sizes[i] = 1
    return sizes


def _throughput(rank: Any, index: int, caller: str) -> float:
    value = rank
    if isinstance(rank, dict):
        value = rank.get("throughput")
    elif not isinstance(rank, int | float):
        value = getattr(rank, "throughput", None)
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{caller}: rank {index} has throughput {value!r}; give a positive number "
            "(samples/s, or any common unit) per rank"
        )
    return float(value)


def batch_weighted_hook(weight, bucket):  # DDP checks these annotations: none, or its own
    """DDP comm hook: all-reduce the SUM of (local batch / global batch) * gradient.

    Register with ``model.register_comm_hook(local_batch / global_batch, batch_weighted_hook)``;
    each rank's loss is the mean over its own batch."""
    buffer: torch.Tensor = bucket.buffer()
    work = weighted_all_reduce(buffer, weight)
    return work.get_future().then(functools.partial(buffer_once_reduced, buffer))


# Backends that scale inside the reduction (NCCL's ncclRedOpCreatePreMulSum; kpt's backend on
# every route): no multiply kernel of its own over each gradient bucket.
PREMUL_BACKENDS = ("kpt", "nccl")


def weighted_all_reduce(tensor: torch.Tensor, weight: float, group: Any = None) -> dist.Work:
    """Start the all-reduce of the sum over ranks of `weight` * `tensor` (each rank its own
    weight), in place. Where the group's backend has PREMUL_SUM (torch's
    _make_nccl_premul_sum, as FSDP uses it) the scaling is part of the reduction; elsewhere the
    tensor is scaled first."""
    if dist.get_backend(group) in PREMUL_BACKENDS:
        op = dist._make_nccl_premul_sum(weight)
    else:
        tensor.mul_(weight)
        op = dist.ReduceOp.SUM
    return dist.all_reduce(tensor, op=op, group=group, async_op=True)


def buffer_once_reduced(buffer: torch.Tensor, future) -> torch.Tensor:
    """A comm hook's result: the bucket's buffer, or the all-reduce's failure (value() raises
    it into the hook's Future, so DDP raises it instead of using an unreduced buffer)."""
    future.value()
    return buffer
