"""What zero-filling a new daemon buffer costs (issue 10, defect 1): the torch executor's
allocate (torch.zeros) against the torch.empty it replaced, and against calloc'd numpy pages
(cheaper, but a numpy-backed storage cannot be resized by out= ops), side by side in one run.

    python packages/kpt-adapter-sim/benchmarks/bench_zeroed_alloc.py

A buffer handed to a new client must never show another client's freed bytes; the table says
what that promise costs per allocation at each size, as a ratio to the unsafe allocation.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from kpt.adapters.sim_executor import TorchExecutor

SIZES = (4 << 10, 256 << 10, 4 << 20, 64 << 20, 256 << 20)
ROUNDS = 15


def timed(allocate, nbytes: int) -> float:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        buffer = allocate(nbytes)
        samples.append(time.perf_counter() - started)
        del buffer
    return statistics.median(samples)


def main() -> None:
    executor = TorchExecutor()
    print(
        f"{'size':>12}  {'allocate (us)':>13}  {'torch.empty (us)':>16}  {'ratio':>6}  "
        f"{'calloc (us)':>16}"
    )
    for nbytes in SIZES:
        zeroed = timed(executor.allocate, nbytes)
        unsafe = timed(lambda n: torch.empty(n, dtype=torch.uint8), nbytes)
        memset = timed(lambda n: torch.from_numpy(np.zeros(n, dtype=np.uint8)), nbytes)
        print(
            f"{nbytes >> 10:>8} KiB  {zeroed * 1e6:>13.1f}  {unsafe * 1e6:>16.1f}  "
            f"{zeroed / unsafe:>6.1f}  {memset * 1e6:>16.1f}"
        )


if __name__ == "__main__":
    main()
