"""Launches that run several kernels, priced as those kernels: a fused RNN layer (cuDNN's), a
convolution's backward (its data and weight gradients) and torch's fused transformer inference
ops. Each kernel is op_timing's; every one after the first is queued behind the one before, so
it pays a queued kernel's launch cost (kernel_queued_us), not an idle device's latency."""

from __future__ import annotations

from kpt.sim._cost import DTYPE_BYTES, OpTiming, op_timing
from kpt.sim._op_cost import DTYPE_ALIASES, normalize_dtype
from kpt.sim._profiles import Profile

# A fused RNN layer's GEMMs: fp32 runs on TF32 tensor cores (cuDNN's default, as convolutions).
RNN_GEMM_DTYPES = {"fp32": "tf32"}
# Elementwise kernels per step: the cell (forward); the cell's gradient and a memset (backward).
RNN_STEP_KERNELS = (1, 2)
RNN_CELL_FLOPS = 10  # per gate element: activations, products, sums
# cuDNN's per-step GEMM (cutlass_80_tensorop_s1688gemm_64x64 on an H200) computes whole
# 64-row tiles: a batch under 64 costs one full tile. Read off the kernel's name, not fitted
# (calibration/h200_fused_sweep.json's 18 LSTM layers: median |error| 5.9%, fit_fused_sweep.py).
RNN_TILE_ROWS = 64


def rnn_timing(profile: Profile, dtype: str, shape: tuple[int, ...]) -> OpTiming:
    """One fused RNN layer as cuDNN runs it: all steps' input projections as one GEMM, then
    per step a recurrent GEMM and the cell's elementwise kernel(s), in series (each step needs
    the last one's hidden state). The backward does the data gradients step by step, then the
    weight gradients of all steps as GEMMs. Every kernel after the first is queued behind the
    one before: it pays a queued kernel's launch cost and the profile's [rnn] kernel gap. A
    bidirectional layer (shape[6] = 2) runs its two directions side by side, the second adding
    [rnn] direction_added of its kernels' time (without it, in series). A layer of a
    unidirectional stack (shape[7] layers) takes its share of the stack, whose layers cuDNN runs
    side by side ([rnn] stack_added and stack_fixed_us); a bidirectional stack's run in series.
    A layer whose directions are launched one at a time (shape[8] launches: oneDNN's
    per-direction op, as torch runs nn.LSTM) gives each launch its share. An Elman layer (one
    gate) at most [rnn] persistent_hidden wide runs all its steps as one persistent kernel a
    direction.
    """
    steps, batch, inp, hidden, gates, backward = (int(d) for d in shape[:6])
    directions = int(shape[6]) if len(shape) > 6 else 1
    layers = max(int(shape[7]), 1) if len(shape) > 7 else 1
    launches = max(int(shape[8]), 1) if len(shape) > 8 else 1
    dtype = DTYPE_ALIASES.get(dtype) or normalize_dtype(dtype)
    gemm = RNN_GEMM_DTYPES.get(dtype, dtype)
    size = DTYPE_BYTES.get(dtype, 4)
    width = gates * hidden

    def matmul(m: int, n: int, k: int) -> OpTiming:
        return op_timing(profile, "matmul", 2.0 * m * n * k, size * (m * k + k * n + m * n), gemm,
                         (m, n, k))  # fmt: skip

    cell = op_timing(profile, "elementwise", RNN_CELL_FLOPS * batch * width,
                     size * 3 * batch * width, dtype)  # fmt: skip
    # Forward: gates (batch, width) = h @ W_hh^T; backward: dh (batch, hidden) = dgates @ W_hh.
    rows = max(batch, RNN_TILE_ROWS)
    recurrent = matmul(rows, hidden, width) if backward else matmul(rows, width, hidden)
    step_kernels = [recurrent] + [cell] * RNN_STEP_KERNELS[bool(backward)]
    once = [matmul(steps * batch, width, inp)]  # the input projection (data gradient)
    if backward:
        once += [matmul(width, inp, steps * batch), matmul(width, hidden, steps * batch)]
    rnn = profile.rnn
    if rnn.persistent(gates, hidden):  # one kernel for every step (its profiler time)
        persistent = rnn.persistent_s(max(steps, 0), bool(backward)) + profile.launch_latency_s
        kernels = [*once, OpTiming(persistent, 0.0)]  # one direction's
    else:
        kernels = once + step_kernels * max(steps, 0)
    hidden_latency = profile.queued_latency_s - rnn.kernel_gap_s  # what a queued kernel hides
    alone = sum(k.duration for k in kernels) - hidden_latency * (len(kernels) - 1)
    if directions == 2 and rnn.direction_added is None:  # in series: one queued behind the other
        alone = 2 * alone - hidden_latency
    elif directions == 2:  # side by side: the second direction adds part of its kernels' time
        alone += rnn.direction_added * sum(k.duration - profile.launch_latency_s for k in kernels)
    if directions == 1:
        alone = alone * rnn.stack_share(layers) + rnn.stack_fixed_share_s(layers)
    return OpTiming(alone / launches, sum(k.hbm_busy for k in kernels) * directions / launches)


def conv_backward_timing(
    profile: Profile, flops: float, nbytes: float, dtype: str, shape: tuple[int, ...]
) -> OpTiming:
    """A convolution's backward as cuDNN runs it, shape (the forward's five, gradients[,
    strided]): the data gradient (1) is the forward's implicit GEMM turned around, priced as
    the forward; the weight gradient (2) reduces the same FLOPs over the batch and the pixels
    into a small output, split over the K dimension: its GEMM takes the conv table's
    backward_work times the forward's (0: the same). In NCHW each also pays the forward's
    transposes. flops and nbytes are the gradients' together, shared evenly."""
    kernels = [bit for bit in (1, 2) if shape[5] & bit]
    flops, nbytes = flops / len(kernels), nbytes / len(kernels)
    strided = tuple(shape[6:7])  # the forward's stride flag, where the shape has one
    forward = op_timing(profile, "conv", flops, nbytes, dtype, (*shape[:5], 0, *strided))
    duration = forward.duration * len(kernels) - profile.queued_latency_s * (len(kernels) - 1)
    if shape[5] & 2:  # the weight gradient's GEMM (NCHW's transposes aside) takes more
        work = profile.efficiency_for("conv").for_dtype(normalize_dtype(dtype)).backward_work
        gemm = forward if shape[4] else op_timing(profile, "conv", flops, nbytes, dtype,
                                                  (*shape[:4], 1, 0, *strided))  # fmt: skip
        duration += ((work or 1.0) - 1) * (gemm.duration - profile.kernel_launch_s)
    return OpTiming(duration, forward.hbm_busy * len(kernels))


# encoder shape's last entry: what torch's fused op runs (aten's transformer/attention.cu).
ENCODER_LAYER, ATTENTION_FUSED, ATTENTION_WEIGHTS = 0, 1, 2
LAYER_NORM_FLOPS = 8  # per element, as the layernorm class is calibrated


def encoder_timing(profile: Profile, dtype: str, shape: tuple[int, ...]) -> OpTiming:
    """torch's fused transformer inference ops, kernel by kernel (shape: batch, seq_q, seq_k,
    embed, heads, ffn, part). Multi-head attention: a GEMM projects q, k and v, a kernel adds
    their biases and scales q, then the scores (fused attention, or where the weights are
    returned two batched GEMMs around a softmax and the heads' average), then the output
    projection. A whole encoder layer (part 0) adds a residual add and a layer norm after the
    attention and after the feed-forward block (a GEMM, its activation, a GEMM)."""
    batch, seq_q, seq_k, embed, heads, ffn, part = (int(d) for d in shape)
    dtype = DTYPE_ALIASES.get(dtype) or normalize_dtype(dtype)
    size = DTYPE_BYTES.get(dtype, 4)
    tokens, head_dim, pairs = batch * seq_q, embed // max(heads, 1), batch * heads * seq_q * seq_k

    def matmul(m: int, n: int, k: int) -> OpTiming:
        return op_timing(profile, "matmul", 2.0 * m * n * k, size * (m * k + k * n + m * n), dtype,
                         (m, n, k))  # fmt: skip

    def elementwise(elements: int, operands: int = 2) -> OpTiming:
        return op_timing(profile, "elementwise", elements, size * operands * elements, dtype)

    def layer_norm() -> OpTiming:
        return op_timing(profile, "layernorm", LAYER_NORM_FLOPS * tokens * embed,
                         size * 2 * tokens * embed, dtype, (tokens, embed))  # fmt: skip

    if seq_q == seq_k:  # self-attention (torch's fast path): q, k and v in one GEMM
        kernels = [matmul(tokens, 3 * embed, embed)]
    else:
        kernels = [matmul(tokens, embed, embed), matmul(batch * seq_k, 2 * embed, embed)]
    kernels.append(elementwise(3 * tokens * embed))
    if part == ATTENTION_WEIGHTS:
        kernels += [
            matmul(batch * heads * seq_q, seq_k, head_dim),
            op_timing(profile, "softmax", 5.0 * pairs, size * 2 * pairs, dtype,
                      (batch * heads * seq_q, seq_k)),
            matmul(batch * heads * seq_q, head_dim, seq_k),
            op_timing(profile, "reduction", pairs, size * (pairs + pairs // max(heads, 1)), dtype,
                      (pairs // max(heads, 1), heads, 0, 1)),
        ]  # fmt: skip
    else:
        kernels.append(op_timing(profile, "attention", 4.0 * pairs * head_dim,
                                 size * 2 * (tokens + batch * seq_k) * embed, dtype,
                                 (batch * heads, seq_q, seq_k, head_dim, 0)))  # fmt: skip
    kernels.append(matmul(tokens, embed, embed))
    if part == ENCODER_LAYER:
        kernels += [elementwise(tokens * embed, 3), layer_norm(), matmul(tokens, ffn, embed),
                    elementwise(tokens * ffn), matmul(tokens, embed, ffn),
                    elementwise(tokens * embed, 3), layer_norm()]  # fmt: skip
    queued = profile.queued_latency_s * (len(kernels) - 1)
    return OpTiming(sum(k.duration for k in kernels) - queued, sum(k.hbm_busy for k in kernels))
