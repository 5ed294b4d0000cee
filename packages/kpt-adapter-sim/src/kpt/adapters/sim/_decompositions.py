"""Ops the executor does not run, rewritten into ops it does, before any CPU fallback.

GradScaler's two ops get decompositions written here (the CUDA kernels' semantics in
allow-listed ops: one unscale launch per chunk of gradients, a few launches to find a
non-finite value, no host round trip), and embedding_bag's sum and mean modes. A few more come
from ``torch._decomp``. Ops whose output size depends on values (nonzero, unique, bincount,
masked_select; boolean-mask indexing in _dispatch) run on the device with one sync for the size
(_value_sized.py), as CUDA does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._decomp import decomposition_table

from kpt.adapters.sim import _value_sized
from kpt.adapters.sim._fallback import cpu_fallback

aten = torch.ops.aten
EMBEDDING_BAG_SUM, EMBEDDING_BAG_MEAN = 0, 1


def amp_unscale_and_check(grads: list[torch.Tensor], found_inf: torch.Tensor,
                          inv_scale: torch.Tensor) -> None:  # fmt: skip
    """_amp_foreach_non_finite_check_and_unscale_: found_inf = 1 if any gradient holds inf or
    NaN (else unchanged), and every gradient is multiplied by inv_scale."""
    if not grads:
        return
    # amax propagates NaN and keeps inf, so one value per gradient tells whether it is finite.
    largest = aten.amax.default(aten.stack.default([aten.abs.default(g).float().reshape(-1)
                                                    .amax() for g in grads]))  # fmt: skip
    bad = aten.logical_or.default(aten.isnan.default(largest), aten.isinf.default(largest))
    aten.copy_.default(found_inf, aten.maximum.default(found_inf, bad.to(found_inf.dtype)))
    aten._foreach_mul_.Tensor(grads, aten.reshape.default(inv_scale, []))


def amp_update_scale(scale: torch.Tensor, growth_tracker: torch.Tensor, found_inf: torch.Tensor,
                     growth_factor: float, backoff_factor: float,
                     growth_interval: int) -> torch.Tensor:  # fmt: skip
    """_amp_update_scale_: back off after a non-finite step, grow after growth_interval clean
    steps in a row (only to a finite scale), as aten/src/ATen/native/cuda/AmpKernels.cu."""
    found = aten.gt.Scalar(found_inf, 0)
    steps = aten.add.Scalar(growth_tracker, 1)
    due = aten.logical_and.default(
        aten.logical_not.default(found), aten.eq.Scalar(steps, growth_interval)
    )
    grown = aten.mul.Scalar(scale, growth_factor)
    grow = aten.logical_and.default(due, aten.logical_not.default(aten.isinf.default(grown)))
    kept = aten.where.self(grow, grown, scale)
    new_scale = aten.where.self(found, aten.mul.Scalar(scale, backoff_factor), kept)
    reset = aten.logical_or.default(found, due)
    new_tracker = aten.where.self(reset, aten.zeros_like.default(steps), steps)
    aten.copy_.default(scale, new_scale)
    aten.copy_.default(growth_tracker, new_tracker)
    return scale


def embedding_bag(op: Any, weight: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                  scale_grad_by_freq: bool = False, mode: int = 0, sparse: bool = False,
                  per_sample_weights: torch.Tensor | None = None,
                  include_last_offset: bool = False, padding_idx: int = -1) -> tuple:  # fmt: skip
    """_embedding_bag / _embedding_bag_forward_only in sum and mean modes: rows gathered, then
    added into their bags in order (the CPU kernel's order); the three bookkeeping outputs as
    the CPU gives them (the backward reads them). Max mode, per-sample weights and padding_idx
    run on the CPU."""
    args = (weight, indices, offsets, scale_grad_by_freq, mode, sparse, per_sample_weights,
            include_last_offset, padding_idx)  # fmt: skip
    if mode not in (EMBEDDING_BAG_SUM, EMBEDDING_BAG_MEAN) or per_sample_weights is not None \
            or padding_idx >= 0 or indices.dim() != 1:  # fmt: skip
        return cpu_fallback(op, args, {}, reason="max mode, per-sample weights or padding_idx")
    bags = offsets.numel() - (1 if include_last_offset else 0)
    device = weight.device
    offset2bag = _bag_of_each_index(indices.numel(), offsets, bags)
    rows = aten.index_select.default(weight, 0, indices)
    sums = aten.zeros.default([bags, weight.shape[1]], dtype=weight.dtype, device=device)
    sums = aten.index_add.default(sums, 0, offset2bag, rows)
    if mode == EMBEDDING_BAG_SUM:
        zeros = aten.zeros.default([bags], dtype=torch.long, device=device)
        return sums, aten.zeros.default([0], dtype=torch.long, device=device), zeros, zeros
    sizes = aten.zeros.default([bags], dtype=torch.long, device=device)
    sizes = aten.index_add.default(sizes, 0, offset2bag, aten.ones_like.default(offset2bag))
    divisor = aten.clamp.default(aten._to_copy.default(sizes, dtype=weight.dtype), 1)
    means = aten.div.Tensor(sums, aten.unsqueeze.default(divisor, 1))
    return means, offset2bag, sizes, aten.clone.default(sizes)


def _bag_of_each_index(count: int, offsets: torch.Tensor, bags: int) -> torch.Tensor:
    """1 at every later bag's start, summed along (a start at the end goes to a spare slot)."""
    starts = aten.zeros.default([count + 1], dtype=torch.long, device=offsets.device)
    later = aten.slice.Tensor(offsets, 0, 1, bags)
    starts = aten.index_add.default(starts, 0, later, aten.ones_like.default(later))
    return aten.cumsum.default(aten.slice.Tensor(starts, 0, 0, count), 0)


def embedding_bag_backward(grad: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
                           offset2bag: torch.Tensor, bag_size: torch.Tensor,
                           maximum_indices: torch.Tensor, num_weights: int,
                           scale_grad_by_freq: bool, mode: int, sparse: bool,
                           per_sample_weights: torch.Tensor | None,
                           padding_idx: int = -1) -> torch.Tensor:  # fmt: skip
    """_embedding_bag_backward for what embedding_bag runs on the device (dense sum and mean):
    each bag's gradient (divided by its size for mean) added into the rows it gathered."""
    args = (grad, indices, offsets, offset2bag, bag_size, maximum_indices, num_weights,
            scale_grad_by_freq, mode, sparse, per_sample_weights, padding_idx)  # fmt: skip
    if mode not in (EMBEDDING_BAG_SUM, EMBEDDING_BAG_MEAN) or sparse or scale_grad_by_freq \
            or per_sample_weights is not None or padding_idx >= 0:  # fmt: skip
        op = aten._embedding_bag_backward.default
        return cpu_fallback(op, args, {}, reason="sparse, max mode, scaled or weighted")
    bags = grad.shape[0]
    bag_of = _bag_of_each_index(indices.numel(), offsets, bags)
    if mode == EMBEDDING_BAG_MEAN:
        sizes = aten._to_copy.default(bag_size, dtype=grad.dtype)
        grad = aten.div.Tensor(grad, aten.unsqueeze.default(aten.clamp.default(sizes, 1), 1))
    rows = aten.index_select.default(grad, 0, bag_of)
    weight_grad = aten.zeros.default([num_weights, grad.shape[1]], dtype=grad.dtype,
                                     device=grad.device)  # fmt: skip
    return aten.index_add.default(weight_grad, 0, indices, rows)


def _bag(op: Any) -> Callable[..., tuple]:
    return lambda *args, **kwargs: embedding_bag(op, *args, **kwargs)


_WRITTEN_HERE: dict[Any, Callable[..., Any]] = {
    aten.nonzero.default: _value_sized.nonzero,
    aten.masked_select.default: _value_sized.masked_select,
    aten._unique2.default: _value_sized.unique2,
    aten.bincount.default: _value_sized.bincount,
    aten._embedding_bag.default: _bag(aten._embedding_bag.default),
    aten._embedding_bag_forward_only.default: _bag(aten._embedding_bag_forward_only.default),
    aten._embedding_bag_backward.default: embedding_bag_backward,
    aten._amp_foreach_non_finite_check_and_unscale_.default: amp_unscale_and_check,
    aten._amp_update_scale_.default: amp_update_scale,
}
# From torch._decomp: each is written in ops the executor runs.
_FROM_TORCH = ("isin", "grid_sampler_2d")


def decomposition_for(func: Any) -> Callable[..., Any] | None:
    """How to run ``func`` as allow-listed ops, or None (it falls back to the CPU)."""
    if func in _WRITTEN_HERE:
        return _WRITTEN_HERE[func]
    if func._overloadpacket.__name__ in _FROM_TORCH and not func._overloadname.endswith("out"):
        return decomposition_table.get(func)
    return None
