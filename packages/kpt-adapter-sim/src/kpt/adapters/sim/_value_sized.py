"""Ops whose output size depends on values, run on the device with one sync, as CUDA runs them.

CUDA's ``nonzero``, ``unique``, ``bincount`` and boolean-mask indexing compute on the GPU, copy
one number to the host (the output size: a synchronizing read), allocate, and finish on the
GPU. These do the same in allow-listed ops: the values never leave the device; only the size
does, through ``.item()``. Results equal the CPU's (nonzero in row-major order; unique sorted,
as CUDA's ``unique`` always is).
"""

from __future__ import annotations

from typing import Any

import torch

aten = torch.ops.aten
MASK_DTYPES = (torch.bool, torch.uint8)


def nonzero(x: torch.Tensor) -> torch.Tensor:
    """aten.nonzero: [count, x.dim()] int64 coordinates of the non-zero elements."""
    flat = aten.reshape.default(aten.ne.Scalar(x, 0), [-1])
    count = int(aten.sum.default(flat).item())  # the one sync: the output's size
    if x.dim() == 0:
        return aten.zeros.default([count, 0], dtype=torch.long, device=x.device)
    positions = aten.sub.Scalar(aten.cumsum.default(flat, 0), 1)  # rank among the non-zeros
    # Zeros go to a spare slot past the end, which is dropped.
    target = aten.where.self(flat, positions, aten.full_like.default(positions, count))
    slots = aten.zeros.default([count + 1], dtype=torch.long, device=x.device)
    every = aten.arange.default(flat.numel(), dtype=torch.long, device=x.device)
    slots = aten.scatter.src(slots, 0, target, every)
    linear = aten.slice.Tensor(slots, 0, 0, count)
    coordinates = []
    for size in reversed(x.shape):
        coordinates.append(aten.remainder.Scalar(linear, size))
        linear = aten.div.Tensor_mode(linear, size, rounding_mode="floor")
    return aten.stack.default(coordinates[::-1], 1)


def has_mask(indices: Any) -> bool:
    return any(i is not None and i.dtype in MASK_DTYPES for i in indices)


def index_with_masks(x: torch.Tensor, indices: list) -> torch.Tensor:
    """aten.index.Tensor with boolean masks: each mask becomes its non-zero coordinates (what
    torch's own indexing does), then one gather with integer indices."""
    expanded: list = []
    for index in indices:
        if index is not None and index.dtype in MASK_DTYPES:
            expanded.extend(aten.unbind.int(nonzero(index), 1))
        else:
            expanded.append(index)
    return aten.index.Tensor(x, expanded)


def masked_select(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    x, mask = aten.broadcast_tensors.default([x, mask])
    return index_with_masks(x, [mask])


def unique2(x: torch.Tensor, sorted: bool = True, return_inverse: bool = False,
            return_counts: bool = False) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """aten._unique2: sorted distinct values, each element's group, each group's size."""
    flat = aten.reshape.default(x, [-1])
    count = flat.numel()
    values, order = aten.sort.default(flat)
    empty_long = aten.zeros.default([0], dtype=torch.long, device=x.device)
    if count == 0:
        inverse = aten.zeros.default(list(x.shape), dtype=torch.long, device=x.device)
        return values, inverse if return_inverse else empty_long, empty_long
    first = aten.ones.default([1], dtype=torch.bool, device=x.device)
    changed = aten.ne.Tensor(aten.slice.Tensor(values, 0, 1), aten.slice.Tensor(values, 0, 0, -1))
    starts = aten.cat.default([first, changed])
    group = aten.sub.Scalar(aten.cumsum.default(starts, 0), 1)
    groups = int(aten.sum.default(starts).item())  # the one sync: the output's size
    distinct = aten.zeros.default([groups], dtype=x.dtype, device=x.device)
    distinct = aten.scatter.src(distinct, 0, group, values)  # equal values: any write wins
    inverse = counts = empty_long
    if return_inverse:
        inverse = aten.scatter.src(aten.zeros_like.default(group), 0, order, group)
        inverse = aten.reshape.default(inverse, list(x.shape))
    if return_counts:
        counts = aten.zeros.default([groups], dtype=torch.long, device=x.device)
        counts = aten.scatter_add.default(counts, 0, group, aten.ones_like.default(group))
    return distinct, inverse, counts


def bincount(x: torch.Tensor, weights: torch.Tensor | None = None,
             minlength: int = 0) -> torch.Tensor:  # fmt: skip
    """aten.bincount: how often each value occurs (or the sum of its weights)."""
    if x.dim() != 1 or x.dtype.is_floating_point or x.dtype == torch.bool:
        raise RuntimeError(f"bincount only supports 1-d non-negative integral inputs, got {x}")
    size = minlength
    if x.numel():
        bounds = aten.stack.default([aten.max.default(x), aten.min.default(x)])
        largest, smallest = aten._to_copy.default(bounds, device="cpu").tolist()  # one sync
        if smallest < 0:
            raise RuntimeError(
                f"bincount only supports non-negative inputs; the smallest value is {smallest}"
            )
        size = max(size, int(largest) + 1)
    if weights is None:
        counts = aten.zeros.default([size], dtype=torch.long, device=x.device)
        return aten.scatter_add.default(counts, 0, x, aten.ones_like.default(x))
    dtype = weights.dtype if weights.dtype.is_floating_point else torch.double
    sums = aten.zeros.default([size], dtype=dtype, device=x.device)
    return aten.scatter_add.default(sums, 0, x, aten._to_copy.default(weights, dtype=dtype))
