"""What an aten op costs on the simulated chip: kpt.sim's OpCost with its class, dtype and shape.

The shape hints follow OpCost's documented forms, so the cost model's refinements (GEMM tile
and alignment terms, wave quantization, the attention score rate, the per-row cost of norms)
apply on the kpt_sim device as they do in the calibration. Only the views' shapes and the
launch's argument tree are read: no tensors are built on this per-op path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from kpt.sim import ATTENTION_BACKWARD_WORK, DTYPE_SIZES, OpCost

# packet -> positions of the two matrix operands in the aten call's arguments.
MATMUL_OPERANDS = {
    "mm": (0, 1), "bmm": (0, 1), "matmul": (0, 1), "linear": (0, 1), "addmm": (1, 2),
    "baddbmm": (1, 2), "addbmm": (1, 2), "addmv": (1, 2),
    "_weight_int8pack_mm": (0, 1), "_scaled_mm": (0, 1),
}  # fmt: skip
# Quantized GEMMs whose weight is stored (N, K), as linear's is.
_WEIGHT_ROWS = frozenset({"linear", "_weight_int8pack_mm"})
# packet -> (position of the input, position of `dim`); FLOPs per element as calibrated.
SOFTMAX_DIM = {
    "_softmax": (0, 1), "_log_softmax": (0, 1), "_safe_softmax": (0, 1),
    "_masked_softmax": (0, 2), "_softmax_backward_data": (1, 2),
    "_log_softmax_backward_data": (1, 2),
}  # fmt: skip
SOFTMAX_FLOPS_PER_ELEMENT = 5
# packet -> (position of the input, position of normalized_shape).
LAYER_NORM_SHAPE = {"native_layer_norm": (0, 1), "native_layer_norm_backward": (1, 2)}
LAYER_NORM_FLOPS_PER_ELEMENT = 8
# packet -> (position of the input, position of the training flag, backward); kpt.sim's
# batchnorm class prices training mode by channel (an eval-mode one is elementwise).
BATCH_NORM = {"native_batch_norm": (0, 5, 0), "native_batch_norm_backward": (1, 7, 1)}
# packet -> (position of query, FLOPs relative to the forward's 4*B*H*Sq*Sk*hd, position of
# is_causal for a flash kernel, which skips masked tiles; the math path computes them all).
ATTENTION = {
    "_scaled_dot_product_attention_math": (0, 1.0, None),
    "_scaled_dot_product_flash_attention_for_cpu": (0, 1.0, 4),
    "_scaled_dot_product_flash_attention_for_cpu_backward": (1, ATTENTION_BACKWARD_WORK, 7),
}
REDUCTIONS = frozenset({
    "sum", "mean", "amax", "amin", "aminmax", "max", "min", "prod", "argmax", "argmin",
    "logsumexp", "linalg_vector_norm", "norm", "std", "var", "std_mean", "var_mean", "any",
    "all", "count_nonzero",
})  # fmt: skip
SUMMING = frozenset({"sum", "mean"})  # accumulate in fp32 whatever the input's dtype
# torch's fused transformer inference ops (the fast path of nn.TransformerEncoderLayer and
# nn.MultiheadAttention in eval) -> positions of (num_heads, the first FFN weight or None,
# need_weights or None); kpt.sim's `encoder` class prices their kernels one by one.
ENCODER = {
    "_transformer_encoder_layer_fwd": (2, 14, None),
    "_native_multi_head_attention": (4, None, 10),
}
COPIES = frozenset({"copy_", "_to_copy", "clone", "copy"})
# Gathers read the rows they select, not their whole source (an embedding lookup of one token
# reads one row of a 1 GB table): the first tensor is the source, the others are indices.
GATHERS = frozenset({"embedding", "index_select", "index", "gather", "take"})
# Scatters write the rows they are given, not their whole destination (a KV-cache write of one
# token per sequence touches those slots): the last tensor is the values, the middle ones the
# indices.
SCATTERS = frozenset({"index_copy", "index_put", "scatter", "index_add"})
# cuDNN runs fp32 convolutions on TF32 tensor cores by default (torch.backends.cudnn.allow_tf32),
# as the H100 calibration measured them; fp32 GEMMs stay fp32 (torch's matmul default).
CONV_DTYPES = {"float32": "tf32"}
ITEMSIZES = DTYPE_SIZES  # kpt.sim's table (old name kept)
# cuBLAS's tensor-core kernels load 16 bytes at a time: a row or a start off that runs its
# align-1/2 kernels, which the cost model prices apart (kpt.sim's misaligned_tflops).
GEMM_ALIGN_BYTES = 16


def estimate_cost(
    op: str, inputs: list, outputs: list, attrs: dict, formula_flops: Callable[..., int]
) -> OpCost:
    """OpCost for one aten launch; formula_flops(op, inputs, outputs, attrs) -> torch's count."""
    packet = op.removeprefix("aten::").split(".", 1)[0]
    moved = float(sum(_nbytes(v) for v in inputs) + sum(_nbytes(v) for v in outputs))
    args = _args(attrs, inputs)
    shaped = _shaped(packet, args, inputs, outputs, moved)
    if shaped is not None:
        return shaped
    dtype = _dtype(inputs, outputs)
    flops = formula_flops(op, inputs, outputs, attrs)
    if flops:
        return OpCost("matmul", float(flops), moved, dtype)
    elements = sum(_numel(v) for v in outputs) or sum(_numel(v) for v in inputs)
    in_elements = sum(_numel(v) for v in inputs)
    shape = None
    if packet in COPIES:
        op_class = "copy"
    elif in_elements > 2 * max(elements, 1) or (
        packet in REDUCTIONS and inputs and _numel(inputs[0]) > max(map(_numel, outputs), default=1)
    ):
        op_class = "reduction"  # flops = elements read, the cost model's convention
        shape = _reduction_shape(packet, args, inputs, outputs) if packet in REDUCTIONS else None
    else:
        op_class = "elementwise"
    return OpCost(op_class, float(max(elements, in_elements)), moved, dtype, shape)


def _shaped(packet: str, args: list, inputs: list, outputs: list, moved: float) -> OpCost | None:
    base = packet.rstrip("_")  # addmm_ costs what addmm does
    if base in MATMUL_OPERANDS:
        return _matmul(base, args, outputs, moved)
    if packet == "convolution":
        return _convolution(args, outputs, moved)
    if packet == "convolution_backward":
        return _convolution_backward(args, moved)
    if packet in ATTENTION:
        position, scale, causal_at = ATTENTION[packet]
        causal = causal_at is not None and len(args) > causal_at and args[causal_at] is True
        return _attention(args, position, scale, causal, moved)
    if packet in GATHERS and inputs and outputs:
        written = sum(_nbytes(v) for v in outputs)
        indices = sum(_nbytes(v) for v in inputs[1:])
        elements = sum(_numel(v) for v in outputs)
        return OpCost("copy", float(elements), 2.0 * written + indices, _dtype(inputs, outputs))
    if base in SCATTERS and len(inputs) >= 2:
        values = inputs[-1] if len(inputs) > 2 else inputs[1]
        indices = sum(_nbytes(v) for v in inputs[1:-1]) if len(inputs) > 2 else 0
        return OpCost(
            "copy", float(_numel(values)), 2.0 * _nbytes(values) + indices, _dtype(inputs, outputs)
        )
    if packet in SOFTMAX_DIM:
        position, dim_at = SOFTMAX_DIM[packet]
        x = _view_at(args, position)
        dim = args[dim_at] if dim_at < len(args) else None
        if x is None or not x.shape:
            return None
        cols = x.shape[dim] if isinstance(dim, int) and -len(x.shape) <= dim < len(x.shape) else 0
        return _rows(x, "softmax", cols or x.shape[-1], SOFTMAX_FLOPS_PER_ELEMENT, moved)
    if packet in BATCH_NORM:
        return _batch_norm(args, moved, *BATCH_NORM[packet])
    if packet in ENCODER:
        return _encoder(args, moved, *ENCODER[packet])
    if packet in LAYER_NORM_SHAPE:
        position, shape_at = LAYER_NORM_SHAPE[packet]
        x = _view_at(args, position)
        normalized = args[shape_at] if shape_at < len(args) else None
        if x is None or not isinstance(normalized, list) or not x.shape:
            return None
        cols = math.prod(int(n) for n in normalized)
        return _rows(x, "layernorm", cols, LAYER_NORM_FLOPS_PER_ELEMENT, moved)
    return None


def _matmul(packet: str, args: list, outputs: list, moved: float) -> OpCost | None:
    i, j = MATMUL_OPERANDS[packet]
    a, b = _view_at(args, i), _view_at(args, j)
    if a is None or b is None or not a.shape or not b.shape:
        return None
    m, k = (a.shape[-2], a.shape[-1]) if len(a.shape) > 1 else (1, a.shape[-1])
    if packet in _WEIGHT_ROWS:  # weight is (N, K), every leading dim of the input is a row
        m, n = math.prod(a.shape[:-1]), b.shape[0]
        batch = 1
    else:
        n = b.shape[-1] if len(b.shape) > 1 else 1
        batch = math.prod(a.shape[:-2]) if len(a.shape) > 2 else 1
    flops = 2.0 * batch * m * n * k
    # Weight-only int8: the profile's own class for it (kpt-serve's Triton kernel on CUDA).
    if packet == "_weight_int8pack_mm":
        return OpCost("matmul_int8w", flops, moved, a.dtype, (m, n, k))
    align = min(_row_alignment(a), _row_alignment(b))  # the output's row is N (the triple's)
    return OpCost("matmul", flops, moved, a.dtype, (m, n, k, align))


def _row_alignment(view: Any) -> int:
    """The bytes (a power of two, up to 16) that `view`'s start and leading dimension are
    multiples of: cuBLAS loads 16-byte vectors only from rows aligned to them, and picks its
    align-1/2/4 kernels by the rest. For a transposed view the leading dimension is the stride
    of its last dim (a weight gradient reads the output gradient transposed: rows of the
    vocabulary's width)."""
    align = _power_of_two_dividing(getattr(view, "offset", 0))
    strides = getattr(view, "strides", None)
    if len(view.shape) < 2 or not strides or 1 in view.shape[-2:]:
        return align  # a vector: no leading dimension
    row, col = strides[-2], strides[-1]
    lead = row if col == 1 else col if row == 1 else None  # None: torch copies it first
    if lead is None:
        return align
    return min(align, _power_of_two_dividing(lead * ITEMSIZES.get(view.dtype, 4)))


def _power_of_two_dividing(nbytes: int) -> int:
    """The largest power of two up to GEMM_ALIGN_BYTES that divides nbytes (0 divides all)."""
    return min(nbytes & -nbytes, GEMM_ALIGN_BYTES) if nbytes > 0 else GEMM_ALIGN_BYTES


def _convolution(args: list, outputs: list, moved: float) -> OpCost | None:
    """convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
    groups): its implicit GEMM."""
    gemm = _conv_gemm(_view_at(args, 0), _view_at(args, 1), outputs[0] if outputs else None,
                      len(args) > 6 and bool(args[6]), _int_at(args, 8))  # fmt: skip
    if gemm is None:
        return None
    shape, flops, dtype = gemm
    if len(shape) == 5 and _strided(args, 3):
        shape = (*shape, 0, 1)  # a forward (no gradients) whose stride is over 1
    return OpCost("conv", flops, moved, dtype, shape)


def _convolution_backward(args: list, moved: float) -> OpCost | None:
    """convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
    transposed, output_padding, groups, output_mask): cuDNN's data and weight gradients, each
    an implicit GEMM of the forward's FLOPs, as kpt.sim's conv shape with the gradients it
    asks for (1 data, 2 weight, 3 both; kpt.sim._cost_composite prices each kernel); the
    bias's is a small reduction left out."""
    gemm = _conv_gemm(_view_at(args, 1), _view_at(args, 2), _view_at(args, 0),
                      len(args) > 7 and bool(args[7]), _int_at(args, 9))  # fmt: skip
    mask = args[10] if len(args) > 10 and isinstance(args[10], list | tuple) else (True, True)
    gradients = int(bool(mask[0])) | 2 * int(len(mask) > 1 and bool(mask[1]))
    if gemm is None or not gradients:
        return None
    shape, flops, dtype = gemm
    layout = shape[4] if len(shape) > 4 else int(_channels_last(_view_at(args, 1)))
    passes = bin(gradients).count("1")
    strided = (1,) if len(shape) == 5 and _strided(args, 4) else ()
    return OpCost("conv", passes * flops, moved, dtype,
                  (*shape[:4], layout, gradients, *strided))  # fmt: skip


def _strided(args: list, i: int) -> bool:
    """Whether a convolution's stride argument (a list per spatial dim) is over 1 anywhere."""
    stride = args[i] if len(args) > i else None
    return isinstance(stride, list | tuple) and any(isinstance(s, int) and s > 1 for s in stride)


def _int_at(args: list, i: int) -> int:
    """A positive integer argument (a convolution's groups), 1 where absent."""
    value = args[i] if len(args) > i else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _conv_gemm(
    x: Any, w: Any, out: Any, transposed: bool, groups: int
) -> tuple[tuple[int, ...], float, Any] | None:
    """(shape, flops, dtype) of a convolution's implicit GEMM from its input, weight and output
    views; None where they do not read as one."""
    if x is None or w is None or out is None or len(x.shape) < 3 or len(w.shape) != len(x.shape):
        return None
    window = math.prod(w.shape[2:])
    cout, cin = out.shape[1] // groups, x.shape[1] // groups
    if transposed:  # each input pixel times a (Cin, Cout*window) matrix, then col2im
        rows = x.shape[0] * math.prod(x.shape[2:])
        shape = (rows, cout * window, cin, 1)
    else:  # the implicit GEMM: (N*Ho*Wo, Cout, Cin*kh*kw) per group, and the input's layout
        rows = out.shape[0] * math.prod(out.shape[2:])
        shape = (rows, cout, cin * window, window, int(_channels_last(x)))
    flops = 2.0 * groups * rows * cout * cin * window
    return shape, flops, CONV_DTYPES.get(x.dtype, x.dtype)


def _channels_last(x: Any) -> bool:
    """Channels innermost (NHWC in memory): cuDNN's tensor-core kernels need no transposes."""
    return x.shape[1] > 1 and x.strides[1] == 1


def _reduction_shape(
    packet: str, args: list, inputs: list, outputs: list
) -> tuple[int, int, int, int] | None:
    """(outputs, reduced extent, contiguous, summing) for a reduction over ``dim`` (args[1]) of
    its first input; contiguous 1 when the reduced elements of each output sit next to each
    other, summing 1 for a sum or mean (torch's 16-bit kernels for the others accumulate in
    the 16-bit type, which the cost model charges)."""
    summing = int(packet in SUMMING)
    x = _view_at(args, 0) or (inputs[0] if inputs else None)
    if x is None or not x.shape or not outputs:
        return None
    count = max(_numel(outputs[0]), 1)
    extent = _numel(x) // count
    if extent <= 1:
        return None
    ndim = len(x.shape)
    dim = args[1] if len(args) > 1 else None
    dims = [dim] if isinstance(dim, int) else dim if isinstance(dim, list) else []
    if not dims or not all(isinstance(d, int) and -ndim <= d < ndim for d in dims):
        return (count, extent, 1, summing)  # everything, or a dim unread: one contiguous pass
    reduced = {d % ndim for d in dims}
    strides = x.strides
    kept = [strides[d] for d in range(ndim) if d not in reduced and x.shape[d] > 1]
    inner = [strides[d] for d in reduced if x.shape[d] > 1]
    contiguous = not kept or not inner or max(inner) < min(kept)
    return (count, extent, int(contiguous), summing)


def _attention(args: list, position: int, scale: float, causal: bool,
               moved: float) -> OpCost | None:  # fmt: skip
    q, k = _view_at(args, position), _view_at(args, position + 1)
    if q is None or k is None or len(q.shape) < 2 or len(k.shape) < 2:
        return None
    heads = math.prod(q.shape[:-2])
    sq, hd, sk = q.shape[-2], q.shape[-1], k.shape[-2]
    flops = scale * 4.0 * heads * sq * sk * hd  # the full product; the engine reads causal
    shape = (heads, sq, sk, hd, int(causal))
    if position == 1:  # a backward (its arguments start with grad_out): it may cost its own
        shape += (1,)
    return OpCost("attention", flops, moved, q.dtype, shape)


def _encoder(args: list, moved: float, heads_at: int, ffn_at: int | None,
             weights_at: int | None) -> OpCost | None:  # fmt: skip
    """(batch, seq_q, seq_k, embed, heads, ffn, part): a whole encoder layer (part 0), or
    multi-head attention without (1) or with (2) its weights returned (need_weights defaults to
    true); FLOPs are the GEMMs' and the scores', informational (the class prices kernels)."""
    x, key = _view_at(args, 0), _view_at(args, 1 if ffn_at is None else 0)
    heads = args[heads_at] if len(args) > heads_at else None
    if x is None or key is None or len(x.shape) != 3 or len(key.shape) != 3:
        return None
    if not isinstance(heads, int) or heads <= 0:
        return None
    (batch, seq_q, embed), seq_k = x.shape, key.shape[1]
    w1 = _view_at(args, ffn_at) if ffn_at is not None else None
    ffn = w1.shape[0] if w1 is not None and w1.shape else 0
    if ffn_at is not None:
        part = 0
    else:
        part = 2 if (args[weights_at] if len(args) > weights_at else True) else 1
    tokens, keys = batch * seq_q, batch * seq_k
    flops = 2.0 * embed * embed * (2 * tokens + 2 * keys) + 4.0 * batch * seq_q * seq_k * embed
    flops += 4.0 * tokens * embed * ffn
    return OpCost("encoder", flops, moved, x.dtype, (batch, seq_q, seq_k, embed, heads, ffn, part))


def _batch_norm(
    args: list, moved: float, position: int, training_at: int, backward: int
) -> OpCost | None:
    """A training-mode batch norm by channel: (channels, elements per channel, channels_last,
    backward); None in eval mode (an elementwise op) or where the input does not read."""
    x = _view_at(args, position)
    training = len(args) > training_at and args[training_at] is True
    if x is None or len(x.shape) < 2 or not training:
        return None
    elements, channels = math.prod(x.shape), x.shape[1]
    shape = (channels, elements // max(channels, 1), int(_channels_last(x)), backward)
    return OpCost("batchnorm", float(LAYER_NORM_FLOPS_PER_ELEMENT * elements), moved, x.dtype,
                  shape)  # fmt: skip


def _rows(x, op_class: str, cols: int, flops_per_element: int, moved: float) -> OpCost:
    elements = math.prod(x.shape)
    rows = elements // cols if cols else 0
    return OpCost(op_class, float(flops_per_element * elements), moved, x.dtype, (rows, cols))


def _args(attrs: dict, inputs: list) -> list:
    """The call's positional arguments with tensor references replaced by their views."""
    out = []
    for value in attrs.get("args", []):
        if isinstance(value, dict) and "__t" in value:
            index = value["__t"]
            value = inputs[index] if isinstance(index, int) and 0 <= index < len(inputs) else None
        out.append(value)
    return out


def _view_at(args: list, position: int) -> Any:
    value = args[position] if position < len(args) else None
    return value if hasattr(value, "shape") and hasattr(value, "dtype") else None


def _dtype(inputs: list, outputs: list) -> str:
    """The dtype the op computes in: its first floating input's, else its first view's."""
    views = [*inputs, *outputs]
    for v in views:
        if v.dtype.startswith(("float", "bfloat", "complex")):
            return v.dtype
    return views[0].dtype if views else "float32"


def _numel(view: Any) -> int:
    return math.prod(view.shape)


def _nbytes(view: Any) -> int:
    return _numel(view) * ITEMSIZES.get(view.dtype, 4)
