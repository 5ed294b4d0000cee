"""The Triton kernel the kit launches (imported only where triton is installed)."""

import triton
import triton.language as tl


@triton.jit
def _plus(a, b):
    return a + b  # a nested @triton.jit call, which interpreters must also handle


@triton.jit
def vector_add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, _plus(x, y), mask=mask)
