"""Uneven shards: all_gather and reduce_scatter whose per-rank parts differ in size.

Heterogeneous ranks shard a tensor in proportion to their speed (`shard_sizes`), but
torch.distributed's flat collectives (all_gather_into_tensor, reduce_scatter_tensor) need equal
parts, and so do the simulator daemon's (it refuses parts of different sizes at one collective)
and gloo's. These pad every part to the largest along dim 0, run the equal-part collective, and
trim: one collective on every route (kpt_sim in the daemon, gloo, nccl, staged), values exact;
the cost is the padding's bytes, world * max(sizes) rows moved for sum(sizes). Synchronous: they
return when the result is in `output`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from kpt.collectives._placement import proportional_split

# The flat equal-part collectives: torch 2.13 renamed them (the old names warn), 2.11 has only
# the old names.
_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_flat = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def shard_sizes(numel: int, ranks: Sequence[Any]) -> list[int]:
    """Per-rank shard sizes summing to `numel`, proportional to each rank's throughput.

    ranks: throughputs (any common unit), or objects with a ``throughput`` attribute or key, as
    for `split_batch` (largest remainders get the leftover; each rank gets at least one when
    there are enough)."""
    return proportional_split(numel, ranks, "shard_sizes", "numel")


def all_gather_uneven(
    output: torch.Tensor, shard: torch.Tensor, sizes: Sequence[int], group: Any = None
) -> torch.Tensor:
    """Every rank's `shard` (sizes[r] rows along dim 0 on rank r), concatenated in rank order
    into `output` (sum(sizes) rows); returns `output`."""
    rank, world = _check("all_gather_uneven", output, shard, sizes, group, full_is="output")
    most = max(sizes)
    rest = shard.shape[1:]
    if all(s == most for s in sizes) and output.is_contiguous():
        _gather_flat(output, shard.contiguous(), group=group)
        return output
    padded = shard.new_zeros((most, *rest))
    with torch.no_grad():
        padded[: sizes[rank]].copy_(shard)
    gathered = shard.new_empty((world * most, *rest))
    _gather_flat(gathered, padded, group=group)
    with torch.no_grad():
        for r, (start, size) in enumerate(_offsets(sizes)):
            output[start : start + size].copy_(gathered[r * most : r * most + size])
    return output


def reduce_scatter_uneven(
    output: torch.Tensor, input: torch.Tensor, sizes: Sequence[int],
    op: Any = dist.ReduceOp.SUM, group: Any = None,
) -> torch.Tensor:  # fmt: skip
    """`input` (sum(sizes) rows along dim 0, one per rank) reduced over the ranks with `op`;
    rank r gets rows [sum(sizes[:r]), sum(sizes[:r + 1])) in `output`; returns `output`."""
    rank, world = _check("reduce_scatter_uneven", input, output, sizes, group, full_is="input")
    most = max(sizes)
    rest = input.shape[1:]
    if all(s == most for s in sizes) and output.is_contiguous():
        _reduce_scatter_flat(output, input.contiguous(), op=op, group=group)
        return output
    padded = input.new_zeros((world * most, *rest))
    with torch.no_grad():
        for r, (start, size) in enumerate(_offsets(sizes)):
            padded[r * most : r * most + size].copy_(input[start : start + size])
    mine = input.new_empty((most, *rest))
    _reduce_scatter_flat(mine, padded, op=op, group=group)
    with torch.no_grad():
        output.copy_(mine[: sizes[rank]])
    return output


def _offsets(sizes: Sequence[int]) -> list[tuple[int, int]]:
    starts, start = [], 0
    for size in sizes:
        starts.append((start, size))
        start += size
    return starts


def _check(caller: str, full: torch.Tensor, part: torch.Tensor, sizes: Sequence[int],
           group: Any, full_is: str) -> tuple[int, int]:  # fmt: skip
    """This rank's number and the group's size, once the shapes agree with `sizes`."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    sizes = list(sizes)
    part_is = "shard" if full_is == "output" else "output"
    if len(sizes) != world or any(type(s) is not int or s < 0 for s in sizes):
        raise ValueError(
            f"{caller}: sizes = {sizes} must hold one int >= 0 per rank of the group "
            f"({world} ranks); kpt.collectives.shard_sizes(numel, throughputs) makes them"
        )
    if full.dim() == 0 or part.dim() == 0:
        raise ValueError(f"{caller}: tensors must have a dim 0 to shard (got a scalar)")
    if full.shape[0] != sum(sizes) or full.shape[1:] != part.shape[1:]:
        raise ValueError(
            f"{caller}: {full_is} has shape {tuple(full.shape)}; with sizes {sizes} it must be "
            f"({sum(sizes)}, *{tuple(part.shape[1:])}), the {part_is}'s trailing dims"
        )
    if part.shape[0] != sizes[rank]:
        raise ValueError(
            f"{caller}: rank {rank}'s {part_is} has {part.shape[0]} rows along dim 0, but "
            f"sizes[{rank}] = {sizes[rank]}; every rank must pass the same sizes"
        )
    return rank, world
