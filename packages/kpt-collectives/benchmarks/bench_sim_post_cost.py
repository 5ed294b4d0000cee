"""What posting one kpt_sim all_reduce costs the posting thread, next to a daemon round trip.

One process, a one-rank group on its own daemon: each all_reduce completes at its post, so
the loop times the client's work alone (torch.distributed's wrapper, the backend, the Work
and its Future, the message), not waiting for peers. Printed: the posting thread's CPU per
all_reduce (time.thread_time, median of REPEATS runs of 1,000 posts, a synchronize after each
250 so the daemon keeps up), the Python function calls per post (cProfile's count: the same on
every machine, a regression check that noise cannot hide), and an empty synchronize's round
trip, measured in the same run.

    python benchmarks/bench_sim_post_cost.py
"""

from __future__ import annotations

import cProfile
import os
import pstats
import statistics
import tempfile
import time
from datetime import timedelta

from kpt.sim import start_daemon

REPEATS = 7
BLOCK = 250  # posts between synchronizes


def main() -> None:
    daemon = start_daemon(profile="h100-sxm:1", devices=1, executor="torch")
    os.environ["KPT_SIM_ENDPOINT"] = daemon.endpoint
    os.environ["KPT_SIM_VISIBLE_DEVICES"] = "0"
    import torch
    import torch.distributed as dist

    import kpt.adapters.sim  # registers kpt_sim
    import kpt.collectives  # noqa: F401  (registers "kpt")

    try:
        with tempfile.TemporaryDirectory(prefix="kpt-bench-post-") as folder:
            dist.init_process_group("kpt", init_method=f"file://{folder}/store", rank=0,
                                    world_size=1, timeout=timedelta(seconds=60))  # fmt: skip
            x = torch.ones(1024, device="kpt_sim")
            dist.all_reduce(x)
            torch.kpt_sim.synchronize()
            trips = []
            for _ in range(300):
                start = time.perf_counter()
                torch.kpt_sim.synchronize()
                trips.append(time.perf_counter() - start)
            per_post = []
            for _ in range(REPEATS):
                cpu = 0.0
                for _ in range(4):
                    start = time.thread_time()
                    for _ in range(BLOCK):
                        dist.all_reduce(x)
                    cpu += time.thread_time() - start
                    torch.kpt_sim.synchronize()
                per_post.append(cpu / (4 * BLOCK))
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(BLOCK):
                dist.all_reduce(x)
            profiler.disable()
            torch.kpt_sim.synchronize()
            calls = sum(row[1] for row in pstats.Stats(profiler).stats.values()) / BLOCK
            dist.destroy_process_group()
    finally:
        daemon.stop()
    post, trip = statistics.median(per_post), statistics.median(trips)
    print(f"| measure | value |\n|---|---|\n"
          f"| posting thread's CPU per all_reduce | {post * 1e6:.1f} us |\n"
          f"| Python calls per all_reduce | {calls:.0f} |\n"
          f"| daemon round trip (empty synchronize) | {trip * 1e6:.1f} us |\n"
          f"| post / round trip | {post / trip:.2f} |")  # fmt: skip
    print(f"runs (us): {[round(p * 1e6, 1) for p in per_post]}")


if __name__ == "__main__":
    main()
