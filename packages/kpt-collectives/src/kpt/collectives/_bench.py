"""nccl-tests-style measurements: one process per rank, each timing collectives of every size.

`run_bench` starts the ranks (``python -m kpt.collectives._bench RANK ...``), waits for all (or
kills them at the limit) and returns rank 0's rows; rank 0 prints them as one JSON line. Host
time is wall time per collective; on kpt_sim the simulated time is measured with device events.
busbw follows nccl-tests doc/PERFORMANCE.md: all_reduce algbw x 2(n-1)/n, all_gather and
reduce_scatter x (n-1)/n, broadcast x 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

BUS_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
}
RESULT_PREFIX = "KPT-BENCH-RESULT "


def run_bench(backend: str, device: str, world: int, sizes: Sequence[int],
              kinds: Sequence[str] = ("all_reduce",), iters: int = 20,
              endpoint: str | None = None, limit_s: float = 600.0) -> list[dict]:  # fmt: skip
    """Rows {kind, bytes, host_s, sim_s, algbw, busbw} from `world` real rank processes."""
    with tempfile.TemporaryDirectory(prefix="kpt-bench-") as folder:
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        if endpoint:
            env["KPT_SIM_ENDPOINT"] = endpoint
        args = [backend, device, str(world), ",".join(map(str, sizes)), ",".join(kinds),
                str(iters), folder]  # fmt: skip
        procs = []
        try:
            for rank in range(world):
                rank_env = dict(env, KPT_SIM_VISIBLE_DEVICES=str(rank)) if endpoint else env
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "kpt.collectives._bench", str(rank), *args],
                    env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                ))  # fmt: skip
            deadline = time.monotonic() + limit_s
            outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
                       for p in procs]  # fmt: skip
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        if p.returncode != 0:
            raise RuntimeError(f"bench rank {rank} failed (exit {p.returncode}):\n{out[-3000:]}")
    per_rank = [json.loads(next(x for x in out.splitlines() if x.startswith(RESULT_PREFIX))
                            [len(RESULT_PREFIX):]) for out in outputs]  # fmt: skip
    rows = []
    for parts in zip(*per_rank):  # a collective ends when its slowest rank is done
        row = dict(parts[0])
        row["host_s"] = max(p["host_s"] for p in parts)
        sims = [p["sim_s"] for p in parts if p["sim_s"] is not None]
        row["sim_s"] = max(sims) if sims else None
        row["algbw"] = row["bytes"] / (row["sim_s"] or row["host_s"])
        row["busbw"] = row["algbw"] * BUS_FACTOR[row["kind"]](world)
        rows.append(row)
    return rows


def format_rows(rows: list[dict], title: str) -> str:
    lines = [title, f"{'collective':<15}{'bytes':>12}{'host us':>12}{'sim us':>10}"
                    f"{'algbw GB/s':>12}{'busbw GB/s':>12}"]  # fmt: skip
    for r in rows:
        sim = f"{r['sim_s'] * 1e6:10.1f}" if r["sim_s"] is not None else f"{'-':>10}"
        lines.append(f"{r['kind']:<15}{r['bytes']:>12}{r['host_s'] * 1e6:12.1f}{sim}"
                     f"{r['algbw'] / 1e9:12.3f}{r['busbw'] / 1e9:12.3f}")  # fmt: skip
    return "\n".join(lines)


def _rank_main(argv: Sequence[str]) -> None:
    rank, backend, device, world = int(argv[0]), argv[1], argv[2], int(argv[3])
    sizes = [int(s) for s in argv[4].split(",")]
    kinds, iters, folder = argv[5].split(","), int(argv[6]), argv[7]
    if device == "kpt_sim":
        import kpt.adapters.sim  # noqa: F401  (the [sim] extra: registers kpt_sim)
    dist.init_process_group(backend, init_method=f"file://{folder}/store", rank=rank,
                            world_size=world, timeout=timedelta(seconds=300))  # fmt: skip
    rows = []
    for kind in kinds:
        for nbytes in sizes:
            numel = max(1, nbytes // 4)
            x = torch.ones(numel, device=device)
            out = torch.empty(numel * world if kind == "all_gather" else numel, device=device)
            if kind == "reduce_scatter":
                x = torch.ones(numel * world, device=device)

            _collective(kind, x, out)  # warm: routes agreed, buffers made, connections up
            dist.barrier()
            sim_s = None
            if device == "kpt_sim":
                start_event = torch.kpt_sim.Event(enable_timing=True)
                end_event = torch.kpt_sim.Event(enable_timing=True)
                start_event.record()
            start = time.perf_counter()
            for _ in range(iters):
                _collective(kind, x, out)
            if device == "kpt_sim":
                end_event.record()
                end_event.synchronize()
                sim_s = start_event.elapsed_time(end_event) / 1e3 / iters
            host_s = (time.perf_counter() - start) / iters
            rows.append({"kind": kind, "bytes": nbytes, "host_s": host_s, "sim_s": sim_s})
    dist.barrier()
    dist.destroy_process_group()
    print(RESULT_PREFIX + json.dumps(rows), flush=True)


def _collective(kind: str, x, out) -> None:
    if kind == "all_reduce":
        dist.all_reduce(x)
    elif kind == "all_gather":
        dist.all_gather_into_tensor(out, x)
    elif kind == "reduce_scatter":
        dist.reduce_scatter_tensor(out, x)
    else:
        dist.broadcast(x, src=0)


if __name__ == "__main__":
    _rank_main(sys.argv[1:])
