"""What an op costs, as the engine and the wire name it: its class, FLOPs, bytes, dtype and
shape hint (OpCost), the class and dtype vocabulary, and the checks a daemon applies to a
cost it receives. The cost model (kpt.sim._cost) turns an OpCost into time."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from kpt.sim._errors import InvalidRequestError

# GEMMs read as (M, N, K): cuBLAS's, and a weight-only int8 GEMM (int8 weights widened in
# registers, its own efficiency where a profile has one, else matmul's).
GEMM_CLASSES = frozenset({"matmul", "matmul_int8w"})
# Op classes that run on the matrix units; every other class runs on the vector units.
MATRIX_CLASSES = GEMM_CLASSES | {"conv", "attention"}
# Names people use for the same class.
CLASS_ALIASES = {
    "bmm": "matmul",
    "linear": "matmul",
    "gemm": "matmul",
    "layer_norm": "layernorm",
    "rms_norm": "rmsnorm",
    "embedding": "gather",
    "scatter": "gather",
    "index": "gather",
    "d2d": "copy",
    "sum": "reduction",
}
DTYPE_ALIASES = {
    "fp64": "fp64", "float64": "fp64", "double": "fp64", "f64": "fp64",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "f32": "fp32",
    "tf32": "tf32",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "f16": "fp16",
    "fp8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "float8_e4m3fnuz": "fp8",
    "float8_e5m2fnuz": "fp8",
    "int8": "int8", "uint8": "int8", "bool": "int8",
    # Integer arithmetic wider than 8 bits runs at the fp32 vector rate.
    "int16": "fp32", "int32": "fp32", "int64": "fp32", "uint16": "fp32", "uint32": "fp32",
    "uint64": "fp32", "complex64": "fp32", "complex128": "fp64",
}  # fmt: skip
ROW_CLASSES = frozenset({"norm", "softmax", "layernorm", "rmsnorm"})


class OpCost(NamedTuple):
    """What an op costs: its class, FLOPs and HBM bytes moved; dtype and shape refine it.

    dtype: a kpt name (fp32, tf32, bf16, fp16, fp8, int8, fp64) or a torch/numpy one
    ("float32", "torch.bfloat16"). shape, by class (other classes ignore it):

    - matmul (bmm, linear, addmm), matmul_int8w (int8 weights, activations in dtype): (M, N,
      K); a batch is flops / (2*M*N*K); a matmul's optional fourth entry is the alignment in
      bytes (a power of two; 16 or more: aligned) that both inputs' starts and leading
      dimensions share, which only strides show (under 16: cuBLAS's align-1/2/4 kernels, as for
      an N or K row that is not a multiple of 16 bytes);
    - conv: the implicit GEMM (N*Ho*Wo, Cout, Cin*kh*kw[, kh*kw[, channels_last[,
      gradients[, strided]]]]), per group; channels_last 1 (NHWC) or 0 (NCHW, transposed for
      the tensor cores); gradients, of a backward: 1 the data's, 2 the weight's, 3 both (flops:
      theirs together; kpt.sim._cost_composite), 0 or absent a forward; strided 1: a stride
      over 1 (a 1x1 window then gathers pixels, not a plain GEMM), 0 or absent: stride 1;
    - attention: (batch*heads, seq_q, seq_k, head_dim[, causal[, backward]]), flops =
      4*B*H*Sq*Sk*hd, the full product (a backward: ATTENTION_BACKWARD_WORK times that);
      causal 1 charges the key tiles a top-left causal mask leaves, as its blocks keep the SMs
      busy (kpt.sim._flash_schedule); backward 1 takes the profile's backward_work for the
      dtype where it names one;
    - softmax, layernorm, norm, rmsnorm: (rows, cols), cols the normalized extent;
    - reduction: (outputs, reduced extent[, contiguous[, summing]]); contiguous 0: the
      reduced dim is strided (an outer dim). Many outputs of a contiguous reduction need no
      second pass. summing 0: not a sum or mean (amax, max, var, ...): over 16-bit inputs
      torch's kernel accumulates in the 16-bit type and its rounds of loads take the
      profile's compare_round_factor times a sum's (absent: 1, a sum).
    - batchnorm (training mode; norm's efficiency where a profile has no table): (channels,
      elements per channel, channels_last 0 or 1, backward 0 or 1); kpt.sim._batch_norm_cost;
    - multi_tensor (a foreach or fused-optimizer kernel; elementwise's efficiency where a
      profile has no table): (thread blocks,), one per 65536-element chunk of each tensor;
    - rnn: one fused RNN layer (cuDNN's): (steps, batch, input, hidden, gates, backward 0/1[,
      directions 1 or 2[, layers of its stack[, launches: 2 where each direction is launched
      alone]]]); costed from the matmul and elementwise classes
      (kpt.sim._cost_composite), flops and bytes are informational;
    - encoder: torch's fused transformer inference ops (nn.TransformerEncoderLayer's and
      nn.MultiheadAttention's fast path in eval): (batch, seq_q, seq_k, embed, heads, ffn, part
      0 a whole encoder layer, 1 attention, 2 attention returning its weights); costed from
      the matmul, attention, softmax, norm and elementwise classes, kernel by kernel.
    """

    op_class: str
    flops: float = 0.0
    bytes: float = 0.0
    dtype: str = "fp32"
    shape: tuple[int, ...] | None = None

    def to_wire(self) -> list:
        """The launch message's form: [op_class, flops, bytes, dtype, shape or None]."""
        shape = None if self.shape is None else [int(s) for s in self.shape]
        return [str(self.op_class), float(self.flops), float(self.bytes), str(self.dtype), shape]

    @classmethod
    def from_wire(cls, raw: Any, op: str = "?") -> OpCost:
        """The checked inverse of to_wire, as a daemon accepts it ([op_class, flops, bytes,
        dtype?, shape?]); InvalidRequestError says what was wrong."""
        if not (type(raw) is list and 3 <= len(raw) <= 5 and type(raw[0]) is str):
            raise InvalidRequestError(
                f"op {op!r}: cost {raw!r:.80} must be [op_class, flops, bytes, dtype?, shape?]"
            )
        flops, nbytes = raw[1], raw[2]
        for name, value in (("flops", flops), ("bytes", nbytes)):
            if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
                raise InvalidRequestError(
                    f"op {op!r}: cost {name} = {value!r} must be a finite number >= 0"
                )
        dtype = raw[3] if len(raw) > 3 and type(raw[3]) is str else "fp32"
        shape = raw[4] if len(raw) > 4 else None
        whole = type(shape) in (list, tuple) and all(type(d) is int for d in shape)
        return cls(raw[0], float(flops), float(nbytes), dtype, tuple(shape) if whole else None)


def cost_to_wire(cost: Any) -> list | None:
    """An OpCost, its wire list, or any object with its fields, as the wire list (None stays)."""
    if cost is None or type(cost) is list:  # None, or already [op_class, flops, bytes, ...]
        return cost
    if isinstance(cost, OpCost):
        return cost.to_wire()
    shape = getattr(cost, "shape", None)
    return [
        str(cost.op_class),
        float(cost.flops),
        float(cost.bytes),
        str(getattr(cost, "dtype", "fp32")),
        None if shape is None else [int(s) for s in shape],
    ]


# Shape lengths each class reads (module doc); a wrong length is an executor bug, refused.
SHAPE_LENGTHS = {"matmul": (3, 4), "matmul_int8w": (3,), "conv": (3, 4, 5, 6, 7),
                 "attention": (4, 5, 6), "reduction": (2, 3, 4),
                 "rnn": (6, 7, 8, 9), "encoder": (7,), "multi_tensor": (1,), "batchnorm": (4,),
                 **{c: (2,) for c in ROW_CLASSES}}  # fmt: skip
SHAPE_FORMS = {"matmul": "(M, N, K[, row alignment in bytes])", "matmul_int8w": "(M, N, K)",
               "conv": "(N*Ho*Wo, Cout, Cin*kh*kw[, kh*kw[, channels_last 0 or 1[, gradients "
                       "0-3[, strided 0 or 1]]]])",
               "attention": "(batch*heads, seq_q, seq_k, head_dim[, causal 0 or 1[, backward 0 "
                            "or 1]])",
               "reduction": "(outputs, reduced extent[, contiguous 0 or 1[, summing 0 or 1]])",
               "rnn": "(steps, batch, input, hidden, gates, backward 0 or 1[, directions 1 or 2[, "
                      "layers in its stack[, launches of the layer's directions]]])",
               "encoder": "(batch, seq_q, seq_k, embed, heads, ffn, part 0-2)",
               "multi_tensor": "(thread blocks,)",
               "batchnorm": "(channels, elements per channel, channels_last 0 or 1, backward 0 "
                            "or 1)",
               **{c: "(rows, cols)" for c in ROW_CLASSES}}  # fmt: skip


def check_shape(op_class: str, shape: tuple[int, ...] | None) -> None:
    """Refuse a shape hint the class cannot read, naming the form it needs."""
    if shape is None:
        return
    lengths = SHAPE_LENGTHS.get(op_class)
    ok = isinstance(shape, tuple | list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    )
    if not ok or (lengths is not None and len(shape) not in lengths):
        form = SHAPE_FORMS.get(op_class, "non-negative integers")
        raise InvalidRequestError(
            f"shape {shape!r} for op class {op_class!r} must be {form}; or pass shape=None"
        )


def normalize_class(op_class: str) -> str:
    return CLASS_ALIASES.get(op_class, op_class)


def normalize_dtype(dtype: str) -> str:
    key = str(dtype).removeprefix("torch.").lower()
    try:
        return DTYPE_ALIASES[key]
    except KeyError:
        raise InvalidRequestError(
            f"dtype {dtype!r} unknown to the cost model; use one of {sorted(set(DTYPE_ALIASES))}"
        ) from None
