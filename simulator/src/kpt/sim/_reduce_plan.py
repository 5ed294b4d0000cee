"""How torch's CUDA reduction kernel splits a reduction over threads, warps and blocks.

PyTorch runs every `sum`, `mean`, `amax`, `var`... on a GPU through one kernel template
(ATen's Reduce.cuh), whose launch configuration (`setReduceConfig`) decides the time as much
as the bytes do: a reduction with few outputs and a long extent gives each thread hundreds of
values to load one after another (latency-bound, not bandwidth-bound), or splits the extent
across blocks that then meet in a grid-wide pass whose last block reads every partial result
in sequence. This module reproduces that decision from the op's shape, so that the cost model
can charge the rounds of loads and the grid-wide pass the kernel actually makes. It models
the configuration, not the kernel's code: the block shape, values per thread, blocks per
output.

Shapes are the engine's reduction shapes: (outputs, extent, contiguous), contiguous 1 when
the reduced elements of an output sit next to each other (a sum over the last dim), 0 when
they are strided (a sum over dim 0, each thread walking a column).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

MAX_BLOCK_THREADS = 512  # Reduce.cuh's MAX_NUM_THREADS (256 for complex double only)
THREADS_PER_UNIT = 2048  # resident threads per SM: blocks_per_sm = 2048 / block threads
WARP = 32
MIN_VALUES_PER_THREAD = 16  # a block split never leaves a thread fewer values than this
MAX_VALUES_PER_THREAD = 256  # past this many values a thread's work is split across blocks
UNROLL = 4  # vt0: loads in flight per thread when the input is not loaded as vectors
OUTPUT_VECTOR = 4  # a strided reduction loads 4 adjacent outputs' values at once
VECTOR_BYTES = 16  # sum and mean load 16-byte vectors of 16-bit input (8 elements)
VECTOR_MIN_EXTENT = 128  # contiguous extents shorter than this are not vectorised


@dataclass(frozen=True)
class ReducePlan:
    """One reduction's launch, as setReduceConfig chooses it."""

    block_threads: int
    blocks: int  # in the whole grid
    load_rounds: int  # rounds of loads one thread waits for in turn
    blocks_per_output: int  # > 1: the extent is split across blocks (a grid-wide pass)
    tail_loads: int  # partial results one thread of the last block reads in sequence

    def waves(self, units: int) -> float:
        """Grid sizes in multiples of what the chip holds at once (at least one)."""
        resident = units * max(THREADS_PER_UNIT // self.block_threads, 1)
        return max(self.blocks / resident, 1.0)


def _floor_pow2(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _output_vector(outputs: int) -> int:
    vec = OUTPUT_VECTOR
    while outputs % vec:
        vec //= 2
    return vec


@functools.lru_cache(maxsize=4096)  # the daemon prices the same shapes step after step
def plan(outputs: int, extent: int, contiguous: bool, dtype_bytes: int, units: int) -> ReducePlan:
    """The launch torch makes for `outputs` reductions of `extent` elements each on a chip of
    `units` SMs. Sums and means of 16-bit inputs load 8-element vectors, everything else 4
    (amax over bf16 is priced as loading like a sum, its rounds slower: the cost model's
    compare_round_factor)."""
    outputs, extent = max(int(outputs), 1), max(int(extent), 1)
    input_vector = max(VECTOR_BYTES // dtype_bytes, UNROLL) if dtype_bytes <= 2 else UNROLL
    vectorized = contiguous and extent >= VECTOR_MIN_EXTENT
    output_vector = 1 if contiguous else _output_vector(outputs)
    if contiguous:  # block.x along the reduced dim: lanes share an output
        dim0, dim1 = (extent // input_vector if vectorized else extent), outputs
    else:  # block.x along the outputs: each lane owns output_vector outputs
        dim0, dim1 = outputs // output_vector, extent
    limit = MAX_BLOCK_THREADS // output_vector
    width0 = _floor_pow2(dim0) if dim0 < limit else limit
    height0 = _floor_pow2(dim1) if dim1 < limit else limit
    width = min(width0, WARP)
    height = min(height0, limit // width)
    width = min(width0, limit // height)

    step_in = step_out = 1
    if contiguous:
        step_in *= width
    else:
        step_out *= width
    split_warps = math.ceil(extent / step_in) >= min(height * 16, MAX_VALUES_PER_THREAD)
    if split_warps:
        step_in *= height
    else:
        step_out *= height
    threads = width * height
    grid_x = math.ceil(max(outputs // output_vector, 1) / step_out)
    target = units * max(THREADS_PER_UNIT // threads, 1)
    per_thread = math.ceil(extent / step_in)
    blocks_per_output = 1
    if split_warps and per_thread >= MAX_VALUES_PER_THREAD and grid_x <= target:
        blocks_per_output = max(
            min(math.ceil(target / grid_x), math.ceil(per_thread / MIN_VALUES_PER_THREAD)),
            math.ceil(per_thread / MAX_VALUES_PER_THREAD),
        )
        step_in *= blocks_per_output
        per_thread = math.ceil(extent / step_in)
    per_round = input_vector if vectorized else UNROLL
    # The grid-wide pass: the last block to finish reads the partials, a block's worth of
    # threads at a time (the lanes too when they shared an output).
    readers = threads if contiguous else height
    tail = math.ceil(blocks_per_output / readers) if blocks_per_output > 1 else 0
    return ReducePlan(
        block_threads=threads,
        blocks=grid_x * blocks_per_output,
        load_rounds=math.ceil(per_thread / per_round),
        blocks_per_output=blocks_per_output,
        tail_loads=tail,
    )
