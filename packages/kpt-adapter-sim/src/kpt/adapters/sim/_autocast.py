"""Autocast on kpt_sim follows CUDA's policy: the same op lists, the same casts.

From PyTorch's aten/src/ATen/autocast_mode.cpp (the CUDA registrations): ops that run in the
lower precision, ops that run in float32, ops that run in float32 unless given an output dtype,
and ops that run in the widest floating type among their inputs. Every other op falls through
and runs in the dtypes it is given. Names missing from a torch version are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from kpt.adapters.sim._tensor import DEVICE_TYPE

LOWER_PRECISION = (
    "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "convolution", "prelu", "addmm", "addmv", "addr",
    "matmul", "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm",
    "chain_matmul", "linalg_multi_dot", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell",
    "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell",
    "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
)  # fmt: skip
FP32 = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
    "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm", "native_layer_norm",
    "group_norm", "frobenius_norm", "nuclear_norm", "cosine_similarity", "poisson_nll_loss",
    "cosine_embedding_loss", "nll_loss", "nll_loss2d", "hinge_embedding_loss", "kl_div",
    "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss", "margin_ranking_loss",
    "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss",
    "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
    "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_nearest2d",
    "_upsample_nearest_exact2d", "upsample_nearest3d", "_upsample_nearest_exact3d",
    "upsample_linear1d", "upsample_bilinear2d", "_upsample_bilinear2d_aa",
    "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa",
)  # fmt: skip
# float32 unless the call passes an output dtype
FP32_UNLESS_DTYPE = ("prod", "softmax", "log_softmax", "cumprod", "cumsum", "linalg_vector_norm",
                     "linalg_matrix_norm", "sum", "norm")  # fmt: skip
PROMOTE = ("addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "grid_sampler",
           "index_put", "scatter_add", "tensordot")  # fmt: skip

_AUTOCAST_KEY = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastPrivateUse1)
_LOW = (torch.float16, torch.bfloat16)


def _map_tensors(value: Any, cast: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return cast(value)
    if isinstance(value, list | tuple):
        return type(value)(_map_tensors(v, cast) for v in value)
    return value


def _floats(values: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _map_tensors(values, lambda t: found.append(t) or t)
    return [t for t in found if t.is_floating_point()]


def _kernel(op: Any, policy: str) -> Callable[..., Any]:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        if policy == "lower":
            target = torch.get_autocast_dtype(DEVICE_TYPE)
            eligible = (torch.float32,)
        elif policy == "promote":
            floats = _floats((args, kwargs))
            target = max(floats, key=lambda t: t.element_size()).dtype if floats else None
            eligible = (torch.float16, torch.bfloat16, torch.float32)
        elif policy == "fp32_unless_dtype" and kwargs.get("dtype") is not None:
            target, eligible = None, ()
        else:  # fp32
            target, eligible = torch.float32, _LOW

        def cast(t: torch.Tensor) -> torch.Tensor:
            if target is not None and t.dtype in eligible and t.dtype != target:
                return t.to(target)
            return t

        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEY):
            return op(*_map_tensors(args, cast), **_map_tensors(kwargs, cast))

    return kernel


def _overloads(name: str) -> list[tuple[str, Any]]:
    """(qualified name, overload) of each tensor-in, tensor-out, non-out= overload of aten.name."""
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return []
    found = []
    for overload in packet.overloads():
        op = getattr(packet, overload)
        schema = op._schema
        takes_tensor = any("Tensor" in str(a.type) for a in schema.arguments)
        writes = any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
        if not takes_tensor or writes or overload.endswith("out"):
            continue
        found.append((name if overload == "default" else f"{name}.{overload}", op))
    return found


def register(library: torch.library.Library) -> int:
    """Register every policy kernel on AutocastPrivateUse1; the number registered."""
    registered = 0
    policies = {"lower": LOWER_PRECISION, "fp32": FP32, "fp32_unless_dtype": FP32_UNLESS_DTYPE,
                "promote": PROMOTE}  # fmt: skip
    for policy, names in policies.items():
        for name in names:
            for qualified, op in _overloads(name):
                library.impl(qualified, _kernel(op, policy), "AutocastPrivateUse1")
                registered += 1
    return registered
