"""run_triton's cost on the host next to launching the interpreted kernel directly.

Baseline: triton's InterpretedFunction launched by hand (what TRITON_INTERPRET=1 gives).
run_triton adds device lookup, the host-copy pass and the adapter hook; on the CPU nothing is
copied, so the ratio is its bookkeeping. Also: the same through the kpt_sim device when
kpt-adapter-sim is installed (tensors copied to the host and back).

    python packages/kpt-hal/benchmarks/bench_triton.py
"""

from __future__ import annotations

import statistics
import time

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

import kpt.hal as hal


def _add_fn(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, x + y, mask=mask)


def median_ms(fn, repeat: int = 15) -> float:
    fn()  # warm: AST rewrite, caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    compiled, interpreted = JITFunction(_add_fn), InterpretedFunction(_add_fn)
    cpu = hal.CpuAdapter()
    rows = []
    for n in (1024, 65536):
        block = 1024
        grid = (triton.cdiv(n, block),)
        x, y, out = torch.randn(n), torch.randn(n), torch.empty(n)
        base = median_ms(lambda: interpreted[grid](x, y, out, n, BLOCK=block))  # noqa: B023
        ours = median_ms(lambda: hal.run_triton(compiled, grid, x, y, out, n, BLOCK=block))  # noqa: B023
        direct = median_ms(
            lambda: hal.run_triton(compiled, grid, x, y, out, n, BLOCK=block, adapter=cpu)  # noqa: B023
        )
        rows.append((f"cpu n={n}", base, ours, direct))
    try:
        import kpt.adapters.sim  # noqa: F401

        n, block = 65536, 1024
        grid = (triton.cdiv(n, block),)
        x, y = torch.randn(n), torch.randn(n)
        dx, dy, dout = x.to("kpt_sim"), y.to("kpt_sim"), torch.empty(n, device="kpt_sim")
        base = median_ms(lambda: interpreted[grid](x, y, torch.empty(n), n, BLOCK=block))
        ours = median_ms(lambda: hal.run_triton(compiled, grid, dx, dy, dout, n, BLOCK=block))
        rows.append((f"kpt_sim n={n} (copies)", base, ours, float("nan")))
    except Exception as exc:  # the simulator is optional here
        print(f"(kpt_sim row skipped: {exc!r})")
    print(f"triton {triton.__version__}, torch {torch.__version__}; median of 15, ms")
    print(f"{'case':<26}{'interpreter':>12}{'run_triton':>12}{'ratio':>8}{'adapter=':>11}")
    for case, base, ours, direct in rows:
        print(f"{case:<26}{base:>12.2f}{ours:>12.2f}{ours / base:>8.2f}{direct:>11.2f}")


if __name__ == "__main__":
    main()
