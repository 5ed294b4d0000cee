"""Scaled-dot-product attention on kpt_sim as ONE fused kernel forward and one backward.

On a GPU, ``F.scaled_dot_product_attention`` asks the backend which kernel to run
(``aten::_fused_sdp_choice``) and runs a flash-attention kernel. PyTorch gives an out-of-tree
device the same hook: answer ``SDPBackend.OVERRIDEABLE`` and it calls
``aten::_scaled_dot_product_fused_attention_overrideable`` (forward) and, from autograd,
``..._overrideable_backward``. kpt_sim answers it whenever the CPU reference would run its own
fused kernel (``_scaled_dot_product_flash_attention_for_cpu``): the daemon then runs exactly
that CPU kernel, so values equal the CPU reference bit for bit, and the launch is costed as the
chip's flash-attention kernel (op class ``attention``), not as the math path's upcasts, masks,
two batched GEMMs and a softmax. Where the CPU picks its math path (dropout, a mask that needs
a gradient), kpt_sim picks it too, with the same values.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from kpt.adapters.sim._plan_cache import remember
from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim._tensor import SimTensor
from kpt.sim import ATTENTION_BACKWARD_WORK

aten = torch.ops.aten
_MATH = int(torch.nn.attention.SDPBackend.MATH.value)
_FUSED = int(torch.nn.attention.SDPBackend.OVERRIDEABLE.value)
_CPU_FLASH = int(torch.nn.attention.SDPBackend.FLASH_ATTENTION.value)
CHOICE_CACHE_LIMIT = 4096  # distinct (shapes, flags) kept; a program with more starts over


def _layout(t: Any) -> Any:
    if not isinstance(t, torch.Tensor):
        return t
    return (tuple(t.shape), t.stride(), t.dtype, t.requires_grad)


def _cpu_twin(t: Any) -> Any:
    """A CPU tensor of the same layout (never written or read): what the CPU would be asked."""
    if not isinstance(t, torch.Tensor):
        return t
    twin = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)
    return twin.requires_grad_(t.requires_grad) if t.is_floating_point() else twin


class FusedAttention:
    """F.scaled_dot_product_attention on kpt_sim: the choice, the fused forward and backward.

    torch asks a backend for its choice through a C++ DispatchStub (``_fused_sdp_choice_stub``,
    set by ``REGISTER_PRIVATEUSE1_DISPATCH`` in a compiled extension), which a Python backend
    cannot set; for such a device torch runs its math path. So kpt_sim registers the composite
    ``aten::scaled_dot_product_attention`` for AutogradPrivateUse1 (and handles it at the Python
    key, where calls without autograd arrive) with the composite's own logic: ask for the
    choice, convert a boolean mask to an additive one, then call
    ``_scaled_dot_product_fused_attention_overrideable`` (whose autograd formula calls
    ``..._overrideable_backward``) or ``_scaled_dot_product_attention_math``. The choices
    made are kept per layout in the Runtime's PlanCache (``attention_choices``).
    """

    def __init__(self, launcher: Any) -> None:
        self._launch = launcher.launch  # (cost function, op, args, kwargs) -> the op's results

    def register(self, library: torch.library.Library) -> None:
        library.impl("scaled_dot_product_attention", self.attention, "AutogradPrivateUse1")

    def handlers(self) -> dict[Any, Any]:
        return {
            aten.scaled_dot_product_attention.default: self.composite,
            aten._fused_sdp_choice.default: self.choice,
            aten._scaled_dot_product_fused_attention_overrideable.default: self.forward,
            aten._scaled_dot_product_fused_attention_overrideable_backward.default: self.backward,
        }

    def composite(self, func: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        return self.attention(*args, **kwargs)

    def attention(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                  scale=None, enable_gqa=False) -> torch.Tensor:  # fmt: skip
        """aten::scaled_dot_product_attention as torch's composite runs it, choice included."""
        fused = self._choose(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # torch's convert_boolean_attn_mask: True keeps a score, False masks it out.
            attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill_(
                attn_mask.logical_not(), float("-inf"))  # fmt: skip
        if fused == _FUSED:
            fused_op = aten._scaled_dot_product_fused_attention_overrideable.default
            return fused_op(query, key, value, attn_mask, dropout_p, is_causal, False,
                            scale=scale)[0]  # fmt: skip
        return aten._scaled_dot_product_attention_math.default(
            query, key, value, attn_mask, dropout_p, is_causal, None, scale=scale,
            enable_gqa=enable_gqa)[0]  # fmt: skip

    def choice(self, func: Any, args: tuple, kwargs: dict) -> int:
        return self._choose(*args, **kwargs)

    def _choose(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                scale=None, enable_gqa=False) -> int:  # fmt: skip
        """OVERRIDEABLE where the CPU reference runs its fused kernel, else MATH (as the CPU)."""
        tensors = (query, key, value, attn_mask)
        if enable_gqa and query.shape[-3:-2] != key.shape[-3:-2]:
            return _MATH  # the overrideable op takes no grouped-query heads
        key_ = (tuple(_layout(t) for t in tensors), dropout_p, is_causal, scale is None,
                enable_gqa, torch.is_grad_enabled())  # fmt: skip
        choices = runtime().plans.attention_choices
        found = choices.get(key_)
        if found is None:
            twins = [_cpu_twin(t) for t in tensors]
            cpu = aten._fused_sdp_choice.default(*twins, dropout_p, is_causal, scale=scale,
                                                 enable_gqa=enable_gqa)  # fmt: skip
            found = _FUSED if cpu == _CPU_FLASH else _MATH
            remember(choices, key_, found, CHOICE_CACHE_LIMIT)
        return found

    def forward(self, func: Any, args: tuple, kwargs: dict) -> tuple:
        q, k, v, bias, dropout_p, is_causal, _debug, scale = _forward_args(args, kwargs)
        out, logsumexp = self._launch(
            forward_cost,
            aten._scaled_dot_product_flash_attention_for_cpu.default,
            (q, k, v, dropout_p, is_causal),
            {"attn_mask": bias, "scale": scale},
        )
        empty = _empty_like_device(q)
        # (output, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k, philox_seed, philox_offset,
        #  debug_attn_mask): the dense fused kernel has no sequence offsets, RNG state or mask.
        return out, logsumexp, empty, empty, q.shape[-2], k.shape[-2], empty, empty, empty

    def backward(self, func: Any, args: tuple, kwargs: dict) -> tuple:
        names = ("grad_out", "query", "key", "value", "attn_bias", "grad_input_mask", "out",
                 "logsumexp", "cum_seq_q", "cum_seq_k", "max_q", "max_k", "dropout_p",
                 "is_causal", "philox_seed", "philox_offset")  # fmt: skip
        a = dict(zip(names, args))
        a.update(kwargs)
        bias = a.get("attn_bias")
        if a["grad_input_mask"][3] and isinstance(bias, torch.Tensor):
            raise RuntimeError(
                "kpt_sim fused attention: a gradient for attn_mask was asked, which the fused "
                "kernel does not compute; the math path does (torch picks it when the mask "
                "requires grad before the forward)"
            )
        grads = self._launch(
            backward_cost,
            aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
            (a["grad_out"], a["query"], a["key"], a["value"], a["out"], a["logsumexp"],
             a["dropout_p"], a["is_causal"]),
            {"attn_mask": bias if isinstance(bias, torch.Tensor) else None,
             "scale": a.get("scale")},
        )  # fmt: skip
        return (*grads, None)


def _forward_args(args: tuple, kwargs: dict) -> tuple:
    names = ("query", "key", "value", "attn_bias", "dropout_p", "is_causal", "return_debug_mask")
    defaults = {"attn_bias": None, "dropout_p": 0.0, "is_causal": False,
                "return_debug_mask": False, "scale": None}  # fmt: skip
    a = {**defaults, **dict(zip(names, args)), **kwargs}
    return (a["query"], a["key"], a["value"], a["attn_bias"], a["dropout_p"], a["is_causal"],
            a["return_debug_mask"], a["scale"])  # fmt: skip


def _empty_like_device(t: SimTensor) -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64, device=t.device)


def _nbytes(*tensors: Any) -> float:
    return float(sum(math.prod(t.shape) * t.element_size() for t in tensors
                     if isinstance(t, torch.Tensor)))  # fmt: skip


def _shape(q: torch.Tensor, k: torch.Tensor, causal: bool) -> list[int]:
    """OpCost's attention form: (batch*heads, seq_q, seq_k, head_dim, causal)."""
    return [math.prod(q.shape[:-2]), q.shape[-2], k.shape[-2], q.shape[-1], int(causal)]


def forward_cost(func: Any, args: tuple, kwargs: dict, tensors: list) -> list:
    """The flash kernel's FLOPs (the full product; the engine charges the tiles a causal mask
    leaves) and bytes: q, k, v (and a mask) read once, the output and row log-sum-exps
    written."""
    q, k, v, _dropout, causal = args[:5]
    bh, sq, sk, hd, _ = shape = _shape(q, k, causal)
    moved = _nbytes(q, k, v, kwargs.get("attn_mask")) + _nbytes(q) * v.shape[-1] / hd
    moved += 4.0 * bh * sq  # fp32 log-sum-exp per row
    return ["attention", 4.0 * bh * sq * sk * hd, moved, str(q.dtype).removeprefix("torch."),
            shape]  # fmt: skip


def backward_cost(func: Any, args: tuple, kwargs: dict, tensors: list) -> list:
    """ATTENTION_BACKWARD_WORK times the forward's FLOPs; reads q, k, v, out, grad_out and the
    log-sum-exps, writes grad_q, grad_k, grad_v."""
    grad_out, q, k, v, out, lse, _dropout, causal = args[:8]
    shape = [*_shape(q, k, causal), 1]  # a backward: the profile may name its own work
    bh, sq, sk, hd, _, _ = shape
    moved = _nbytes(grad_out, q, k, v, out, lse, kwargs.get("attn_mask")) + _nbytes(q, k, v)
    return ["attention", ATTENTION_BACKWARD_WORK * 4.0 * bh * sq * sk * hd, moved,
            str(q.dtype).removeprefix("torch."), shape]  # fmt: skip
