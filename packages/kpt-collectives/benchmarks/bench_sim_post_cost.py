"""What posting one kpt_sim all_reduce costs the posting thread, next to a daemon round trip.

One process, a one-rank group on its own daemon: each all_reduce completes at its post, so
the loop times the client's work alone (torch.distributed's wrapper, the backend, the Work
and its Future, the message), not waiting for peers. Printed: the posting thread's CPU per
all_reduce (time.thread_time, median of REPEATS runs of 1,000 posts, a synchronize after each
250 so the daemon keeps up), and its mean over all of them, which keeps what the garbage
collector's full passes cost (they walk every object of the process, torch's included: a
run that holds one is several times slower, and the median hides it), with the number of full
passes; the Python function calls per post (cProfile's count) and the objects the collector
tracks that one unsettled post keeps alive (what those passes are triggered by), both the same
on every machine, regression checks that noise cannot hide; and an empty synchronize's round
trip, measured in the same run. The process's CPU over the same loops (time.process_time, every
thread) shows what the completion thread spends meanwhile: its polls, and the sends of the posts
queued with the launches that its polls carry.

    python benchmarks/bench_sim_post_cost.py
"""

from __future__ import annotations

import cProfile
import gc
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
            per_post, process_per_post = [], []
            full_passes = []

            def count_full_passes(phase: str, info: dict) -> None:
                if phase == "start" and info["generation"] == 2:
                    full_passes.append(1)

            gc.callbacks.append(count_full_passes)
            for _ in range(REPEATS):
                cpu = process_cpu = 0.0
                for _ in range(4):
                    start, process_start = time.thread_time(), time.process_time()
                    for _ in range(BLOCK):
                        dist.all_reduce(x)
                    cpu += time.thread_time() - start
                    process_cpu += time.process_time() - process_start
                    torch.kpt_sim.synchronize()
                per_post.append(cpu / (4 * BLOCK))
                process_per_post.append(process_cpu / (4 * BLOCK))
            gc.callbacks.remove(count_full_passes)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(BLOCK):
                dist.all_reduce(x)
            profiler.disable()
            torch.kpt_sim.synchronize()
            calls = sum(row[1] for row in pstats.Stats(profiler).stats.values()) / BLOCK
            kept = tracked_per_unsettled_post(dist, x)
            dist.destroy_process_group()
    finally:
        daemon.stop()
    post, trip = statistics.median(per_post), statistics.median(trips)
    print(f"| measure | value |\n|---|---|\n"
          f"| posting thread's CPU per all_reduce | {post * 1e6:.1f} us |\n"
          f"| the same, mean of all {REPEATS * 4 * BLOCK} posts | "
          f"{statistics.mean(per_post) * 1e6:.1f} us ({len(full_passes)} full collector "
          f"passes) |\n"
          f"| the process's CPU per all_reduce (every thread) | "
          f"{statistics.median(process_per_post) * 1e6:.1f} us |\n"
          f"| Python calls per all_reduce | {calls:.0f} |\n"
          f"| tracked objects an unsettled all_reduce keeps | {kept:.1f} |\n"
          f"| daemon round trip (empty synchronize) | {trip * 1e6:.1f} us |\n"
          f"| post / round trip | {post / trip:.2f} |")  # fmt: skip
    print(f"runs (us): {[round(p * 1e6, 1) for p in per_post]}")


def tracked_per_unsettled_post(dist, x, posts: int = 200) -> float:
    """Objects the garbage collector tracks, per all_reduce the daemon has not answered yet
    (the completion thread held off): what lives on between the collector's passes."""
    import kpt.collectives._work as work

    handoff, work.HANDOFF_S = work.HANDOFF_S, 3600.0
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(posts):
            dist.all_reduce(x)
        gc.collect()  # cyclic garbage does not count; only what is still alive
        return (len(gc.get_objects()) - before) / posts
    finally:
        gc.enable()
        work.HANDOFF_S = handoff
        import torch

        torch.kpt_sim.synchronize()


if __name__ == "__main__":
    main()
