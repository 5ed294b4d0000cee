"""Host-side cost of a kpt_sim collective next to one daemon round trip, measured in one run.

Two rank processes on one daemon (h100-sxm + mi300x): each times an empty synchronize (one
round trip to the daemon) and a 4 KiB all_reduce through the kpt backend, medians of N calls.
The collective's cost is the slowest rank's; the ratio is collective / round trip.

    python benchmarks/bench_sim_overhead.py [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist

import kpt.collectives  # registers "kpt"
import kpt.sim


def rank_main(rank: int, calls: int, folder: str) -> None:
    import kpt.adapters.sim  # noqa: F401  (registers kpt_sim)

    dist.init_process_group("kpt", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2, timeout=timedelta(seconds=120))  # fmt: skip
    x = torch.ones(1024, device="kpt_sim")
    dist.all_reduce(x)
    round_trips, collectives = [], []
    for _ in range(calls):
        start = time.perf_counter()
        torch.kpt_sim.synchronize()
        round_trips.append(time.perf_counter() - start)
    dist.barrier()
    for _ in range(calls):
        start = time.perf_counter()
        dist.all_reduce(x)
        collectives.append(time.perf_counter() - start)
    dist.barrier()
    dist.destroy_process_group()
    medians = {"round_trip": statistics.median(round_trips),
               "collective": statistics.median(collectives)}  # fmt: skip
    print("RESULT " + json.dumps(medians), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int)
    parser.add_argument("--folder")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args.rank, args.calls, args.folder)
        return
    daemon = kpt.sim.start_daemon(profile="h100-sxm:1,mi300x:1", devices=2, executor="torch")
    try:
        with tempfile.TemporaryDirectory(prefix="kpt-bench-sim-") as folder:
            procs = [subprocess.Popen(
                [sys.executable, __file__, "--rank", str(r), "--folder", folder,
                 "--calls", str(args.calls)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env=dict(os.environ, KPT_SIM_ENDPOINT=daemon.endpoint,
                         KPT_SIM_VISIBLE_DEVICES=str(r), OMP_NUM_THREADS="1"),
            ) for r in range(2)]  # fmt: skip
            try:
                outputs = [p.communicate(timeout=600)[0] for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
    finally:
        daemon.stop()
    results = []
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"rank failed:\n{out[-3000:]}")
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))
    trip = max(r["round_trip"] for r in results)
    coll = max(r["collective"] for r in results)
    print(f"2 kpt_sim ranks on one daemon, medians of {args.calls} calls (slowest rank)")
    print(f"daemon round trip (empty synchronize)   {trip * 1e6:9.1f} us")
    print(f"4 KiB all_reduce through the kpt backend {coll * 1e6:9.1f} us")
    print(f"collective / round trip: {coll / trip:.2f}")


if __name__ == "__main__":
    main()
