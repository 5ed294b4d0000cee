"""The cost model: a roofline with saturating efficiency curves, as plain functions.

A calibration script fits a profile by calling `op_time(profile, op_class, flops, bytes, ...)`
against measurements; the engine calls the same function for every op.

time = launch + fixed(class, dtype) + max(compute, memory) + overhead, where compute and memory
run at their curve's efficiency and the op's shape refines them. A curve eff(x) = e_max * x /
(x + x_half) is a start-up time plus the work at e_max: padding (tiles, partial waves) adds to
the work, never to the start-up, so tiny or odd ops cost about a launch. Shape hints:
kpt.sim._op_cost.OpCost.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from kpt.sim._batch_norm_cost import batch_norm_busy
from kpt.sim._errors import InvalidRequestError
from kpt.sim._flash_schedule import causal_share, causal_time_share
from kpt.sim._op_cost import (
    CLASS_ALIASES,
    DTYPE_ALIASES,
    GEMM_CLASSES,
    MATRIX_CLASSES,
    ROW_CLASSES,
    check_shape,
    normalize_dtype,
)
from kpt.sim._profiles import Efficiency, Profile
from kpt.sim._reduce_plan import plan

# Tensor-core dtypes and their element sizes: their GEMM kernels need 16-byte aligned rows.
TENSOR_CORE_BYTES = {"tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}
DTYPE_BYTES = {"fp64": 8, "fp32": 4, **TENSOR_CORE_BYTES}
ALIGN_BYTES = 16
WARP_ROW_ELEMENTS = 2048  # torch's persistent (warp-per-row) softmax takes rows up to this
# ... holding up to 32 elements per lane at this width; wider rows hold 64 and run slower
# (the H100's bf16 rows of 1536-2048 elements: 0.42 G elements/us, of 384-1000: 0.52-0.55).
SHORT_ROW_ELEMENTS = 1024
# Rows too wide for the warp kernel run one block of up to 1024 threads each (SoftMax.cu's
# host_softmax), in one of three kernels: the row in registers while it needs fewer than 10
# per thread (cunn_SoftMaxForwardReg), else in shared memory where it fits the 48 KiB a block
# gets without opting in, less the reduction's 32 floats, and its rows are whole 16-byte
# vectors (cunn_SoftMaxForwardSmem), else read from HBM again for each pass.
BLOCK_ROW_THREADS = 1024
REGISTER_ROW_LIMIT = 10
ROW_SHARED_BYTES = 48 * 1024 - 32 * 4
ROW_BLOCKS_PER_UNIT = 2  # 1024-thread blocks an SM holds at once (2048 threads)
# cuBLAS runs a GEMM of at most this many rows or columns as a gemv or small-N kernel
# (gemv2T_kernel, gemmSN_TN_kernel on an H200) whatever its rows' alignment; from 8 rows a
# misaligned one takes the align-1 tile kernels (calibration/h200_skinny_gemm.json, GPT-2's head).
GEMV_ROWS = 4
# A flash-attention backward's time as a multiple of its forward's at the same shape, as the
# FLOPs an attention cost names (4*B*H*Sq*Sk*hd times this). It recomputes the scores and runs
# five GEMMs to the forward's two (2.5x the FLOPs, FlashAttention-2 section 3.2) at a lower
# efficiency: the H100's compute-bound forward+backward runs took 3.6-4.8x their forward
# (calibration/h100_measurements*.json, median 4.1), so the backward is 3.1 forwards.
ATTENTION_BACKWARD_WORK = 3.1
# Flash attention's (query, key) tile where a profile names none for the dtype (fp32 runs the
# memory-efficient kernel, which skips masked tiles the same way).
FLASH_TILE = (128, 128)


class OpTiming(NamedTuple):
    duration: float  # seconds from start to end, launch latency included
    hbm_busy: float  # seconds of exclusive HBM bandwidth the op uses (shared with other work)


def efficiency(x: float, e_max: float, x_half: float) -> float:
    """Saturating curve: the fraction of peak reached by work of size x."""
    if x_half <= 0:
        return e_max
    return e_max * x / (x + x_half)


def shape_penalty(shape: tuple[int, ...] | None, tile: int) -> float:
    """Fraction of a tile-padded problem that is useful work (1.0 for tile-aligned dims)."""
    if not shape or tile <= 1:
        return 1.0
    useful = 1.0
    for dim in shape:
        if dim > 0:
            useful *= dim / (math.ceil(dim / tile) * tile)
    return useful


def misaligned(dtype: str, shape: tuple[int, ...] | None, op_class: str = "matmul") -> bool:
    """A tensor-core GEMM with a row not a multiple of 16 bytes (no vector loads): cuBLAS runs
    an align-1/2/4 kernel."""
    align = row_alignment(dtype, shape, op_class)
    return align is not None and align[0] * TENSOR_CORE_BYTES[dtype] < ALIGN_BYTES


def row_alignment(
    dtype: str, shape: tuple[int, ...] | None, op_class: str = "matmul"
) -> tuple[int, bool] | None:
    """(elements, output's) of a tensor-core GEMM's least aligned row: the largest power of two
    of elements (up to 16 bytes' worth) that it is a multiple of, and whether that row is the
    output's alone (N; the H100 ran 4097^3, both rows odd, at the inputs' rate); None for other
    dtypes and shapes.

    The triple shows contiguous operands' rows, N and K wide. A matmul's fourth entry, where
    given, adds what only the operands' strides show, in bytes: a transposed operand's row is
    its leading dimension (a weight gradient dW = dY^T X reads dY's rows, the vocabulary's
    width), and an operand may start off 16 bytes. For a convolution (shape[3] = kh*kw) the
    row is a pixel's Cin channels (channels last).
    """
    size = TENSOR_CORE_BYTES.get(dtype)
    if size is None or not shape or len(shape) < 3:
        return None
    full = max(ALIGN_BYTES // size, 1)
    conv_window = op_class == "conv" and len(shape) > 3 and shape[3] > 0
    k = shape[2] // shape[3] if conv_window else shape[2]
    n_align, k_align = _power_of_two_dividing(shape[1], full), _power_of_two_dividing(k, full)
    strided = full
    if op_class != "conv" and len(shape) > 3:
        strided = max(_power_of_two_dividing(shape[3] or 1, ALIGN_BYTES) // size, 1)
    inputs = min(k_align, strided)
    return (n_align, True) if n_align < inputs else (inputs, False)


def _power_of_two_dividing(n: int, cap: int) -> int:
    """The largest power of two up to cap that divides n (cap for 0)."""
    return min(n & -n, cap) if n > 0 else cap


def skinny(shape: tuple[int, ...] | None, rows: int) -> bool:
    """A GEMM of at most `rows` rows or columns (M or N of its (M, N, K)): a gemv or split-K
    kernel streams the other operand."""
    return bool(shape) and len(shape) >= 3 and min(shape[0], shape[1]) <= rows


def wave_efficiency(shape: tuple[int, ...], flops: float, tile: tuple[int, int], units: int):
    """Busy fraction of the compute units over the waves of thread blocks (tile per block)."""
    m, n, k = shape[:3]
    batch = max(1.0, flops / (2.0 * m * n * k)) if m and n and k else 1.0
    waves = math.ceil(m / tile[0]) * math.ceil(n / tile[1]) * batch / units
    return waves / math.ceil(waves) if waves > 0 else 1.0


class _Rates(NamedTuple):
    peak: float
    eff: Efficiency
    hbm_bandwidth: float
    fixed: float  # kernel launch + this class's fixed cost for this dtype
    unit: str
    units: int  # compute units (SMs), for wave quantization
    wave_tile: tuple[int, int] | None
    ramp_s: float  # the compute curve's start-up time: x_half at the unit's fastest rate


def _rates(profile: Profile, op_class: str, dtype: str) -> _Rates:
    key = (op_class, dtype)
    table = _RATES.setdefault(profile, {})
    found = table.get(key)
    if found is None:
        unit = "matrix" if op_class in MATRIX_CLASSES else "vector"
        eff = profile.efficiency_for(op_class).for_dtype(dtype)
        fixed = profile.kernel_launch_s + eff.fixed_s.get(dtype, 0.0)
        fastest = max(profile.peak_flops[unit].values())
        ramp = eff.compute_x_half / (fastest * eff.compute_e_max) if fastest > 0 else 0.0
        peak = profile.peak_flops[unit][dtype]
        if eff.class_flops and peak > 0:
            peak = eff.class_flops  # the class computes in one precision whatever it stores
        found = table[key] = _Rates(
            peak,
            eff,
            profile.hbm_bandwidth,
            fixed,
            unit,
            profile.compute_units,
            eff.wave_tile.get(dtype),
            ramp,
        )
    return found


_RATES: dict[Profile, dict[tuple[str, str], _Rates]] = {}


def _executed_flops(
    op_class: str, dtype: str, flops: float, shape, r: _Rates, fallback: float = 0.0
) -> float:
    """FLOPs the units spend, padding included: tiles, idle blocks of a partial wave, channels."""
    eff = r.eff
    useful = 1.0
    if op_class in GEMM_CLASSES or op_class == "conv":
        if eff.tile > 1:
            useful *= shape_penalty(shape[:3], eff.tile)
        if fallback and eff.misaligned_tile > eff.tile:
            # The fallback kernels' output tiles are larger: M and N pad to them instead.
            tiles = shape_penalty(shape[:2], eff.misaligned_tile)
            useful *= tiles / shape_penalty(shape[:2], max(eff.tile, 1))
        if not fallback and r.wave_tile:
            useful *= wave_efficiency(shape, flops, r.wave_tile, r.units)
        if op_class == "conv" and eff.channel_align > 1 and len(shape) > 3 and shape[3] > 0:
            channels = shape[2] / shape[3]  # K = Cin * kh*kw
            useful *= channels / (math.ceil(channels / eff.channel_align) * eff.channel_align)
    elif op_class == "attention":
        if eff.tile > 1:
            useful *= shape_penalty(shape[1:3], eff.tile)
        if r.wave_tile:
            waves = _attention_waves(shape, r)
            useful *= waves / math.ceil(waves) if waves > 0 else 1.0
    return flops / useful if useful > 0 else flops


def _attention_work(
    dtype: str, flops: float, shape: tuple[int, ...], r: _Rates
) -> tuple[float, float]:
    """(FLOPs the units execute, seconds of softmax) of an attention kernel.

    Two GEMMs do 4 * head_dim FLOPs per score, and each score also needs an exponential
    (score_rate). A backward (shape[5]) is named ATTENTION_BACKWARD_WORK forwards; a profile
    may give its kernels their own multiples of a forward's products (backward_work) and
    softmax (backward_score_work: recomputed scores and their gradients)."""
    eff = r.eff
    scores = flops / (4 * shape[3]) if shape[3] > 0 else 0.0
    if len(shape) == 6 and shape[5] and eff.backward_work:
        forwards = 1 / ATTENTION_BACKWARD_WORK
        flops *= forwards * eff.backward_work
        scores *= forwards * (eff.backward_score_work or eff.backward_work)
    share = 1.0
    if len(shape) >= 5 and shape[4] and r.wave_tile:
        share = causal_time_share(shape[0], shape[1], shape[2], tuple(r.wave_tile), r.units,
                                  eff.block_tiles)  # fmt: skip
    elif len(shape) >= 5 and shape[4]:
        share = causal_share(shape[1], shape[2], *FLASH_TILE)
    softmax = scores * share / eff.score_rate if eff.score_rate else 0.0
    return _executed_flops("attention", dtype, flops, shape, r) * share, softmax


def _attention_waves(shape: tuple[int, ...], r: _Rates) -> float:
    """Flash attention: one block per (batch*head, tile of queries), in waves over the SMs."""
    return shape[0] * math.ceil(shape[1] / r.wave_tile[0]) / r.units


def strided(shape: tuple[int, ...] | None) -> bool:
    """A reduction over a strided (outer) dim: shape (outputs, extent, 0[, summing])."""
    return bool(shape) and len(shape) >= 3 and shape[2] == 0


def summing(shape: tuple[int, ...] | None) -> bool:
    """A reduction that sums (sum, mean): shape's 4th element 1 or absent."""
    return not shape or len(shape) < 4 or shape[3] == 1


def warp_per_row(shape: tuple[int, ...], dtype: str) -> bool:
    """A row torch's softmax keeps in one warp's registers: <= 2048 elements and <= 8 KiB."""
    return shape[-1] <= WARP_ROW_ELEMENTS and shape[-1] * DTYPE_BYTES.get(dtype, 4) <= 8192


def block_softmax_kernel(shape: tuple[int, ...], dtype: str) -> str:
    """Which kernel torch's softmax runs on rows wider than the warp kernel takes: "registers",
    "shared" or "global" (the row read from HBM for each pass)."""
    cols, size = shape[-1], DTYPE_BYTES.get(dtype, 4)
    if -(-cols // BLOCK_ROW_THREADS) < REGISTER_ROW_LIMIT:
        return "registers"
    if cols * size < ROW_SHARED_BYTES and cols % (ALIGN_BYTES // size) == 0:
        return "shared"
    return "global"


def _block_softmax(op_class: str, shape: tuple[int, ...], dtype: str) -> str | None:
    """block_softmax_kernel of a softmax row too wide for the warp kernel; None otherwise."""
    if op_class != "softmax" or not shape or warp_per_row(shape, dtype):
        return None
    return block_softmax_kernel(shape, dtype)


def reread_factor(eff: Efficiency, rows: int, row_bytes: int, units: int, cache: int) -> float:
    """Bytes moved per byte of a softmax whose row is read again for each pass (the third block
    kernel): from the cache where the rows in flight fit it, else from HBM."""
    in_flight = min(rows, units * ROW_BLOCKS_PER_UNIT) * row_bytes
    if eff.cached_row_factor and in_flight <= cache:
        return eff.cached_row_factor
    return eff.wide_row_factor


def nchw_window(shape: tuple[int, ...] | None) -> bool:
    """A convolution in NCHW (layout flag 0) with a window larger than 1x1."""
    return bool(shape) and len(shape) >= 5 and shape[4] == 0 and shape[3] > 1


def pointwise(flops: float, shape: tuple[int, ...] | None) -> bool:
    """A convolution with a 1x1 window and one group: a GEMM over the pixels."""
    return bool(shape) and len(shape) >= 4 and shape[3] == 1 and not grouped(flops, shape)


def grouped(flops: float, shape: tuple[int, ...]) -> bool:
    """A grouped (depthwise) convolution: more than one group."""
    return conv_groups(flops, shape) > 1.5


def grouped_time(flops: float, shape: tuple[int, ...], eff: Efficiency) -> float:
    """Seconds of a grouped (depthwise) convolution's direct kernel: no GEMM tiles to pad and
    no GEMM start-up, a rate per FLOP plus a cost per output element. Channels-last ones run
    cuDNN's kernel (grouped_*, per dtype); NCHW ones PyTorch's own (nchw_grouped_*, which is
    as slow in bf16 as in fp32: a thread per output walks its window)."""
    outputs = flops / (2.0 * shape[2]) if shape[2] else 0.0  # N * groups * H * W
    rate, per_output = eff.grouped_flops, eff.grouped_output_rate
    if eff.nchw_grouped_flops and len(shape) >= 5 and shape[4] == 0:
        rate, per_output = eff.nchw_grouped_flops, eff.nchw_grouped_output_rate
    return flops / rate + (outputs / per_output if per_output else 0.0)


def conv_groups(flops: float, shape: tuple[int, ...]) -> float:
    """Groups of a convolution whose shape is per group: flops / (2 * M * N * K)."""
    m, n, k = shape[:3]
    return flops / (2.0 * m * n * k) if m and n and k else 1.0


def _compute_time(
    op_class: str,
    dtype: str,
    flops: float,
    shape: tuple[int, ...] | None,
    r: _Rates,
    fallback: float,
) -> float:
    """Executed work at e_max of the dtype's peak (a fallback kernel's rate, where one runs),
    plus the curve's start-up time.

    eff(x) = e_max * x / (x + x_half) is that sum with x counted at the unit's fastest rate:
    a start-up of x_half / (fastest peak * e_max) seconds, the same for every dtype and never
    scaled by padding (scaling it made a padded 4x4x4 GEMM cost seconds).
    """
    eff = r.eff
    peak = r.peak
    extra = 0.0
    if shape:
        if op_class == "conv" and eff.grouped_flops and grouped(flops, shape):
            return grouped_time(flops, shape, eff)
        if (op_class in GEMM_CLASSES or op_class == "conv") and len(shape) >= 3:
            if fallback:
                peak = min(peak, fallback)
            flops = _executed_flops(op_class, dtype, flops, shape, r, fallback)
        elif op_class == "attention" and len(shape) >= 4:
            flops, extra = _attention_work(dtype, flops, shape, r)
        elif eff.short_row_flops and op_class in ROW_CLASSES and shape[-1] <= SHORT_ROW_ELEMENTS:
            peak = eff.short_row_flops
        elif eff.register_row_flops and _block_softmax(op_class, shape, dtype) == "registers":
            peak = eff.register_row_flops
    return flops / (peak * eff.compute_e_max) + r.ramp_s + extra


def fallback_rate(
    eff: Efficiency, dtype: str, shape: tuple[int, ...] | None, op_class: str
) -> float:
    """FLOP/s of the fallback kernel cuBLAS runs for rows under 16 bytes (0: none runs):
    align-2/4 kernels (SM80's) where rows are a multiple of 2 elements, else align-1 kernels
    (SM75's), slower still when the odd row is the output's (a vocabulary head's forward)."""
    if not eff.misaligned_flops or not (op_class in GEMM_CLASSES or op_class == "conv"):
        return 0.0
    if not misaligned(dtype, shape, op_class):
        return 0.0
    if eff.misaligned_gemv_factor and skinny(shape, GEMV_ROWS):
        return 0.0  # a gemv or small-N kernel, which takes rows of any alignment
    elements, output = row_alignment(dtype, shape, op_class)
    if elements >= 2 and eff.align2_flops:
        return eff.align2_flops
    if output and eff.misaligned_output_flops:
        return eff.misaligned_output_flops
    return eff.misaligned_flops


def _overhead(op_class: str, shape: tuple[int, ...] | None, eff: Efficiency) -> float:
    """Time outside the roofline: the per-row cost of norms."""
    if eff.row_rate and shape and op_class in ROW_CLASSES:
        return shape[0] / eff.row_rate
    return 0.0


def reduction_times(
    flops: float, shape: tuple[int, ...] | None, dtype: str, r: _Rates
) -> tuple[float, float]:
    """(latency-bound time, grid-wide pass) of a reduction as torch launches it
    (kpt.sim._reduce_plan): each wave of blocks waits for its threads' rounds of loads, one
    after another, and a block's own start and finish; an extent split across blocks adds a
    pass whose last block reads the partial results in sequence. (0, 0): the profile has no
    such terms."""
    eff = r.eff
    if not eff.load_round_s:
        return 0.0, 0.0
    if shape and len(shape) >= 2:
        outputs, extent, contiguous = shape[0], shape[1], not strided(shape)
    else:  # no shape: the full reduction of `flops` elements
        outputs, extent, contiguous = 1, int(flops), True
    size = DTYPE_BYTES.get(dtype, 4)
    launch = plan(outputs, extent, contiguous, size, r.units)
    round_s = eff.load_round_s
    if size <= 2 and not summing(shape):
        # amax, max, var... of 16-bit inputs accumulate in that type: every value converts to
        # fp32 and back inside the chain each round waits on (a sum accumulates in fp32).
        round_s *= eff.compare_round_factor
    latency = launch.waves(r.units) * (launch.load_rounds * round_s + eff.block_s)
    if launch.blocks_per_output == 1:
        return latency, 0.0
    return latency, eff.second_pass_s + launch.tail_loads * eff.tail_load_s


def op_timing(
    profile: Profile,
    op_class: str,
    flops: float,
    nbytes: float,
    dtype: str = "fp32",
    shape: tuple[int, ...] | None = None,
) -> OpTiming:
    """Roofline: launch + fixed + max(compute time, memory time) + overhead (module doc)."""
    op_class = CLASS_ALIASES.get(op_class, op_class)
    if op_class in ("rnn", "encoder") and shape is not None:
        check_shape(op_class, shape)
        from kpt.sim._cost_composite import encoder_timing, rnn_timing  # they price kernels here

        return (rnn_timing if op_class == "rnn" else encoder_timing)(profile, dtype, shape)
    dtype = DTYPE_ALIASES.get(dtype) or normalize_dtype(dtype)
    r = _rates(profile, op_class, dtype)
    if shape is not None:
        check_shape(op_class, shape)
    if not (0 <= flops < math.inf and 0 <= nbytes < math.inf):
        raise InvalidRequestError(
            f"op cost must be finite and >= 0, got flops={flops} bytes={nbytes}"
        )
    strided = False
    if op_class == "conv" and shape is not None and len(shape) >= 6:
        if shape[5]:
            from kpt.sim._cost_composite import conv_backward_timing

            return conv_backward_timing(profile, flops, nbytes, dtype, shape)
        strided = len(shape) > 6 and bool(shape[6])
        shape = shape[:5]
    if op_class == "conv" and r.eff.pointwise_gemm and not strided and pointwise(flops, shape):
        # A 1x1 window at stride 1 reads each pixel once, in order: a plain GEMM. A strided
        # one gathers every other pixel, and cuDNN's heuristics pick other kernels for it.
        return op_timing(profile, "matmul", flops, nbytes, dtype, tuple(shape[:3]))
    if op_class == "batchnorm" and shape is not None:
        busy, memory = batch_norm_busy(r.eff, nbytes, shape, r.hbm_bandwidth, r.units)
        return OpTiming(r.fixed + busy, memory)
    fallback = fallback_rate(r.eff, dtype, shape, op_class)  # 0: cuBLAS's usual kernels
    compute = 0.0
    if flops:
        if r.peak <= 0:
            raise InvalidRequestError(
                f"{dtype} {op_class} is not supported on {profile.name}'s {r.unit} units "
                "(peak 0 in its profile); use another dtype"
            )
        compute = _compute_time(op_class, dtype, flops, shape, r, fallback)
    memory = transposes = 0.0
    if nbytes:
        eff = r.eff
        moved = nbytes  # bytes the loads spend: misaligned rows waste bandwidth
        row_bytes = shape[-1] * DTYPE_BYTES.get(dtype, 1) if shape else 0
        if op_class in ROW_CLASSES and shape:
            if eff.misaligned_memory_factor < 1 and row_bytes % ALIGN_BYTES:
                moved = nbytes / eff.misaligned_memory_factor
            if eff.register_row_flops and op_class == "softmax":
                if _block_softmax(op_class, shape, dtype) == "global":
                    moved *= reread_factor(eff, shape[0], row_bytes, r.units, profile.cache_bytes)
            elif eff.wide_row_bytes and row_bytes > eff.wide_row_bytes:
                moved *= eff.wide_row_factor
        # eff(x) = e_max * x / (x + x_half): x_half bytes' worth of start-up time.
        bandwidth = r.hbm_bandwidth * eff.memory_e_max
        memory = eff.memory_x_half / bandwidth
        if eff.row_stream_rate and shape and op_class in ROW_CLASSES:
            # One block per row: fewer rows than SMs leave HBM bandwidth unused (the start-up
            # above is not a stream, so it keeps the full rate).
            # The rate is per fp32 element's 4 bytes: a 16-bit row streams the same elements/s.
            per_row = eff.row_stream_rate * DTYPE_BYTES.get(dtype, 4) / 4
            streams = max(shape[0], 1)
            if eff.warp_row_rate:
                if warp_per_row(shape, dtype):
                    per_row = eff.warp_row_rate * DTYPE_BYTES.get(dtype, 4) / 4
                else:
                    # 1024-thread blocks, one per row: an SM's throughput binds, not the rows'.
                    streams = min(streams, r.units)
            bandwidth = min(bandwidth, streams * per_row)
        if op_class == "multi_tensor" and eff.block_stream_rate and shape:
            # A block per chunk: a launch of a few dozen blocks (an optimizer over many small
            # tensors) streams at blocks x one block's rate, far below HBM bandwidth.
            per_block = eff.block_stream_rate * DTYPE_BYTES.get(dtype, 4) / 4
            bandwidth = min(bandwidth, max(shape[0], 1) * per_block)
        memory += moved / bandwidth
        if (eff.skinny_rows and op_class in GEMM_CLASSES and skinny(shape, eff.skinny_rows)
                and not fallback):  # fmt: skip
            # cuBLAS's heuristics take a gemv or split-K kernel where it streams faster; the
            # faster of the two curves also keeps a GEMM that grows past the threshold from
            # getting cheaper. Misaligned rows run the fallback kernels from GEMV_ROWS up, and
            # below it gemv kernels whose scalar loads reach a share of the curve.
            streaming = r.hbm_bandwidth * eff.skinny_memory_e_max
            gemv = (eff.skinny_memory_x_half + moved) / streaming
            if eff.misaligned_gemv_factor and misaligned(dtype, shape, op_class):
                memory = gemv / eff.misaligned_gemv_factor
            else:
                memory = min(memory, gemv)
        if (op_class == "conv" and eff.nchw_passes and nchw_window(shape)
                and not (eff.grouped_flops and grouped(flops, shape))):  # fmt: skip
            # NCHW with a window: transpose kernels before and after the GEMM, in series (a
            # grouped one runs PyTorch's NCHW kernel: no GEMM, no transposes).
            transposes = eff.nchw_passes * nbytes / bandwidth
    busy = compute if compute > memory else memory
    overhead = _overhead(op_class, shape, r.eff) + transposes
    if op_class == "reduction":
        latency, grid_pass = reduction_times(flops, shape, dtype, r)
        busy = max(busy, latency)
        overhead += grid_pass
    return OpTiming(r.fixed + busy + overhead, memory + transposes)


def op_time(
    profile: Profile,
    op_class: str,
    flops: float,
    nbytes: float,
    dtype: str = "fp32",
    shape: tuple[int, ...] | None = None,
) -> float:
    """Predicted seconds for one op on one device, launch latency included."""
    return op_timing(profile, op_class, flops, nbytes, dtype, shape).duration


def transfer_time(nbytes: float, bandwidth: float, latency: float) -> float:
    """Alpha-beta time of one transfer over one link."""
    return latency + nbytes / bandwidth
