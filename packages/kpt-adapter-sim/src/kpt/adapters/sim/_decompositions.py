"""Ops the executor does not run, rewritten into ops it does, before any CPU fallback.

GradScaler's two ops get decompositions written here (the CUDA kernels' semantics in
allow-listed ops: one unscale launch per chunk of gradients, a few launches to find a
non-finite value, no host round trip). A few more come from ``torch._decomp``. Ops whose output
shape depends on values (nonzero, boolean-mask indexing, unique, bincount) still run on the CPU:
they need the values on the host, as they do on CUDA (a synchronizing copy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._decomp import decomposition_table

aten = torch.ops.aten


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


_WRITTEN_HERE: dict[Any, Callable[..., Any]] = {
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
