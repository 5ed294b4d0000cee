"""Multi-tensor (foreach) kernels on a GPU: one launch each, by thread blocks and bytes.

CUDA's multi_tensor_apply runs a foreach op as one block per 65536-element chunk of each
tensor, at most 320 blocks and 110/64/48/36/30 tensors (by the number of lists) per launch.
An optimizer over many small tensors launches kernels of a few dozen blocks, fewer than the
chip's SMs; this sweep times single launches from 1 to 320 blocks so that fit_multi_tensor.py
can fit what one block streams. The optimizer steps that validate it are a different program
(measure_h200_steps.py, "optimizers").

Torch only. Each configuration launches one kernel (launches_per_call says so); its device
time is the median over 15 calls of the profiler's kernel time, L2 flushed before each call.

Usage (device machine): python3 measure_multi_tensor.py --out "$OUT"
Smoke test on a CPU:    python3 measure_multi_tensor.py --out /tmp/x --smoke
"""

from __future__ import annotations

import statistics

import torch
from measure_h100 import sweep_main

CHUNK = 65536  # elements per block (ATen/native/cuda/MultiTensorApply.cuh, kChunkSize)
# op -> (lists read, lists written): 2*4 bytes (fp32) per element per list moved.
OPS = {
    "mul_scalar": (1, 1),  # _foreach_mul_(xs, s)
    "add_list": (2, 1),  # _foreach_add_(xs, ys)
    "addcmul": (3, 1),  # _foreach_addcmul_(xs, ys, zs, s)
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def run_op(op: str, lists: list[list[torch.Tensor]]) -> None:
    if op == "mul_scalar":
        torch._foreach_mul_(lists[0], 0.999)
    elif op == "add_list":
        torch._foreach_add_(lists[0], lists[1])
    else:
        torch._foreach_addcmul_(lists[0], lists[1], lists[2], 0.001)


def configs(smoke: bool) -> list[tuple[str, str, int, int]]:
    """(op, dtype, tensors, elements per tensor), each one launch of tensors * chunks blocks."""
    if smoke:
        return [("add_list", "fp32", 2, 1000)]
    out = []
    for op in OPS:
        for dtype in DTYPES:
            for tensors in (1, 2, 4, 8, 16, 30):  # within every depth's tensor limit
                for numel in (4096, 16384, CHUNK, 4 * CHUNK):
                    out.append((op, dtype, tensors, numel))
            for tensors, numel in ((10, 32 * CHUNK), (20, 16 * CHUNK)):  # 320 blocks
                out.append((op, dtype, tensors, numel))
    return out


def kernel_times(fn, flush: torch.Tensor, reps: int) -> list[float]:
    """Device microseconds of each multi-tensor kernel fn launched over reps calls, each
    after an L2 flush (the flush's own kernel is left out by name)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            flush.zero_()
            fn()
        torch.cuda.synchronize()
    return [e.time_range.elapsed_us() for e in prof.events()
            if e.device_type.name == "CUDA" and "multi_tensor" in e.name]  # fmt: skip


def measure(smoke: bool, dev: str) -> list[dict]:
    flush = torch.empty(64 << 20, dtype=torch.float32, device=dev)  # 256 MB > L2
    rows = []
    for op, dtype, tensors, numel in configs(smoke):
        reads, writes = OPS[op]
        lists = [[torch.rand(numel, device=dev, dtype=DTYPES[dtype]) for _ in range(tensors)]
                 for _ in range(reads)]  # fmt: skip
        blocks = tensors * -(-numel // CHUNK)
        size = lists[0][0].element_size()
        row = {"op": op, "dtype": dtype, "tensors": tensors, "numel": numel, "blocks": blocks,
               "bytes": (reads + writes) * tensors * numel * size}  # fmt: skip
        if dev.startswith("cuda"):
            for _ in range(3):
                run_op(op, lists)
            reps = 15
            times = kernel_times(lambda: run_op(op, lists), flush, reps)  # noqa: B023
            row["launches_per_call"] = len(times) / reps
            row["kernel_us"] = statistics.median(times)
        else:
            run_op(op, lists)
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    sweep_main(
        __doc__,
        "h200_multi_tensor.json",
        lambda smoke, dev: {"chunk_elements": CHUNK, "kernels": measure(smoke, dev)},
    )


if __name__ == "__main__":
    main()
