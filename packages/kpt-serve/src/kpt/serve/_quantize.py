"""Quantized variants of a model: int8 weight-only and fp8 (weights and activations).

Every linear layer of the decoder blocks is replaced; embeddings, norms and the LM head stay in
the engine's dtype (the head's logits feed sampling, and on tied models it is the embedding).

- "int8": weights as int8 with one scale per output channel (symmetric, round to nearest),
  activations in the engine's dtype. Decoding reads half the weight bytes of bf16. On CUDA a
  batch of up to MAX_ROWS (256) rows, decodes and prompt chunks, takes a Triton kernel that
  widens the int8 tiles in registers (_triton_quant); on kpt_sim it takes one
  aten::_weight_int8pack_mm launch, costed by the profile's class for that kernel
  (matmul_int8w). Longer prompts widen the weights with their scales in one Triton pass, then
  run cuBLAS; every batch elsewhere widens, runs one GEMM and scales its output (the reference
  the others are tested against).
- "fp8": weights as float8 (e4m3) with one scale per tensor, activations scaled into float8
  at run time by their own maximum, then one torch._scaled_mm with tensor-wise scales, as
  vLLM's dynamic fp8 does. On an H200 its cuBLASLt GEMM took about half the time of the
  row-wise form at decode sizes (benchmarks/bench_quantized.py --kernels). One scale per
  batch means a request's rounding depends on what it is batched with, as in vLLM. Needs a
  device whose kpt.hal adapter advertises "fp8" (Hopper, Ada, MI300, and the kpt_sim
  profiles of those chips) and bfloat16 activations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kpt.serve._config import QUANTIZATIONS
from kpt.serve._triton_attention import triton_available
from kpt.serve._triton_quant import MAX_ROWS, fp8_quantize, int8_linear, int8_widen

INT8_MAX = 127.0
_SKIPPED = ("lm_head",)


def check_quantization(method: str | None, dtype: torch.dtype, features: frozenset[str]) -> None:
    """Refuse, with what to do instead, a quantization the device or dtype cannot run."""
    if method is None:
        return
    if method not in QUANTIZATIONS:
        raise ValueError(
            f"quantization={method!r} is not one of {', '.join(QUANTIZATIONS)} (or None)"
        )
    if method == "fp8" and "fp8" not in features:
        raise ValueError(
            "quantization='fp8' needs a device whose adapter advertises fp8 (an H100/H200, "
            "an Ada GPU, an MI300, or kpt_sim with such a profile); this one offers "
            f"{', '.join(sorted(features)) or 'no features'}: use quantization='int8'"
        )
    if method == "fp8" and dtype != torch.bfloat16:
        raise ValueError(
            f"quantization='fp8' scales its GEMMs into bfloat16, not {dtype}; "
            "set dtype=torch.bfloat16"
        )


def fp8_dtype(device: torch.device) -> torch.dtype:
    """AMD's MI300 runs the 'fnuz' float8 encoding; everything else the OCP e4m3."""
    if device.type == "cuda" and torch.version.hip:
        return torch.float8_e4m3fnuz
    return torch.float8_e4m3fn


class QuantizedLinear(nn.Module):
    """A linear layer whose weight is stored in a narrow type: int8 with a scale per output
    channel, or float8 with one scale."""

    def __init__(
        self,
        linear: nn.Linear,
        method: str,
        dtype: torch.dtype,
        device: torch.device,
        activations: ActivationQuantizer | None = None,
    ) -> None:
        super().__init__()
        self.method = method
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.device = device
        # Empty (on the meta device) until load_weight fills them on `device`.
        store = torch.int8 if method == "int8" else fp8_dtype(device)
        empty = torch.empty(self.out_features, self.in_features, dtype=store, device="meta")
        self.register_buffer("weight", empty)
        # int8 scales in the activations' dtype (what the fused kernels take); fp8's one scale
        # in float32, as _scaled_mm takes it.
        scale_dtype = dtype if method == "int8" else torch.float32
        shape = (self.out_features,) if method == "int8" else ()
        self.register_buffer("weight_scale", torch.empty(shape, dtype=scale_dtype, device="meta"))
        self.bias = linear.bias
        self._kernel = _int8_kernel(device) if method == "int8" else "scaled_mm"
        # fp8: one per model, shared by its layers (quantize_linears passes it).
        self.activations = activations or ActivationQuantizer.for_device(device)

    @torch.no_grad()
    def load_weight(self, weight: torch.Tensor) -> None:
        """Quantize a full-precision [N, K] weight into this layer, on its device."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"weight of shape {list(weight.shape)} for a {self.in_features}->"
                f"{self.out_features} linear layer"
            )
        weight = weight.to(device=self.device, dtype=torch.float32)
        if self.method == "int8":
            scale = weight.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX
            quantized = (weight / scale[:, None]).round_().clamp_(-INT8_MAX, INT8_MAX)
        else:
            top = torch.finfo(self.weight.dtype).max
            scale = weight.abs().amax().clamp(min=1e-12) / top
            quantized = (weight / scale).clamp_(-top, top)
            scale = scale / _fp8_reach(self.weight.dtype)  # activations' scale: their maximum
        # Row-major whatever the source's layout (GPT-2's Conv1D weights arrive transposed):
        # the kernels read each output channel's K weights in a row.
        self.weight = quantized.to(self.weight.dtype).contiguous()
        self.weight_scale = scale.to(self.weight_scale.dtype).reshape(self.weight_scale.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self._kernel == "scaled_mm":
            quantized, top = self.activations(rows, x, self.weight.dtype)
            out = torch._scaled_mm(
                quantized, self.weight.t(), scale_a=top, scale_b=self.weight_scale,
                out_dtype=x.dtype,
            )  # fmt: skip
        elif self._kernel == "triton" and rows.shape[0] <= MAX_ROWS:
            out = int8_linear(rows, self.weight, self.weight_scale)
        elif self._kernel == "triton":  # a longer prompt: compute-bound, cuBLAS's
            out = F.linear(rows, int8_widen(self.weight, self.weight_scale, rows.dtype))
        elif self._kernel == "pack_mm" and rows.shape[0] <= MAX_ROWS:
            # kpt_sim takes CUDA's path: up to MAX_ROWS one fused launch, longer ones widened.
            out = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.weight_scale)
        else:  # widen, then one GEMM: the reference, and a prompt's compute-bound GEMM on CUDA
            out = F.linear(rows, self.weight.to(rows.dtype)) * self.weight_scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.method}, kernel={self._kernel}"


def _int8_kernel(device: torch.device) -> str:
    if device.type == "cuda":
        return "triton" if triton_available() else "widen"
    # kpt_sim computes _weight_int8pack_mm as the widening reference does and costs it by the
    # profile's matmul_int8w class. The CPU's own kernel is not used: in torch 2.13 it crashed
    # the process for an inner size of 60 and gave wrong values for 8, 24 and 200.
    return "pack_mm" if device.type == "kpt_sim" else "widen"


def _fp8_reach(dtype: torch.dtype) -> float:
    """What an activation's largest magnitude maps to: a hair under the format's maximum, so
    that rounding never leaves the range (and no clamp kernel is needed)."""
    return torch.finfo(dtype).max / (1 + 2**-7)


class ActivationQuantizer:
    """Activations scaled into float8 by their largest magnitude, the last result kept for the
    next layer that reads the same activation: q, k and v projections share one, gate and up
    another.

    In PyTorch four launches, not a chain of elementwise ops: the maximum (one reduction, in
    float32), a floor for all-zero input, the zero addcdiv adds to, and one addcdiv that scales
    and writes float8; on CUDA Triton's (`fused`: one launch for a decode row). The scale's
    constant is folded into the weights' scales at load time (_fp8_reach).

    The kept activation is held, so no other tensor can take its memory; its version counter
    tells an in-place change. Captured into a CUDA graph, the sharing is captured too.
    """

    def __init__(self, fused: bool = False) -> None:
        self.fused = fused  # Triton's kernels (CUDA)
        self._last: tuple | None = None  # (activation, its version, float8 values, maximum)

    @classmethod
    def for_device(cls, device: torch.device) -> ActivationQuantizer:
        """Triton's kernels on CUDA, PyTorch's launches elsewhere."""
        return cls(fused=device.type == "cuda" and triton_available())

    def __call__(
        self, rows: torch.Tensor, source: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`rows`: the [M, K] view of `source`, the layer's input (what sharing is keyed by)."""
        # Inference-mode tensors keep no version counter: nothing is shared for them.
        version = None if source.is_inference() else source._version
        last = self._last
        if last and last[0] is source and last[1] == version and last[2].dtype == dtype:
            return last[2], last[3]
        if self.fused and rows.numel():
            quantized, top = fp8_quantize(rows, dtype, _fp8_reach(dtype))
        else:
            top = torch.linalg.vector_norm(rows, math.inf, dtype=torch.float32)
            top.clamp_(min=1e-12)
            quantized = torch.empty(rows.shape, dtype=dtype, device=rows.device)
            zero = torch.zeros((), dtype=torch.float32, device=rows.device)
            torch.addcdiv(zero, rows, top, value=_fp8_reach(dtype), out=quantized)
        self._last = None if version is None else (source, version, quantized, top)
        return quantized, top


def quantize_linears(
    model: nn.Module, method: str | None, dtype: torch.dtype, device: torch.device
) -> dict[str, QuantizedLinear]:
    """Replace the model's linear layers by QuantizedLinear ones on `device`, computing in
    `dtype`; returns them by their weight's parameter name (for the loader to fill). A layer
    whose weight holds values (not on the meta device) is quantized from them on the way."""
    if method is None:
        return {}
    replaced: dict[str, QuantizedLinear] = {}
    activations = ActivationQuantizer.for_device(device)
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or name in _SKIPPED:
                continue
            quantized = QuantizedLinear(child, method, dtype, device, activations)
            if child.weight.device.type != "meta":
                quantized.load_weight(child.weight)
            setattr(parent, name, quantized)  # the full-precision weight is dropped here
            replaced[f"{parent_name}.{name}.weight".lstrip(".")] = quantized
    return replaced


def quantized_weight_bytes(model: nn.Module, dtype: torch.dtype, method: str | None) -> int:
    """Bytes of the weights once quantized by `method` (linear weights one byte each, plus
    their scales: one per output channel in `dtype` for int8, one float32 for fp8), for a
    model on the meta device built in any dtype."""
    size = torch.empty((), dtype=dtype).element_size()
    total = 0
    seen: set[int] = set()  # tied weights (the LM head and the embedding) count once
    for name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            quantized = (
                method is not None
                and type(module) is nn.Linear
                and param_name == "weight"
                and name.rpartition(".")[2] not in _SKIPPED
            )
            if quantized:
                total += param.numel() + (param.shape[0] * size if method == "int8" else 4)
            else:
                total += param.numel() * size
    return total
