"""Host-side cost of a kpt_sim collective next to one daemon round trip, measured in one run.

Two rank processes on one daemon (h100-sxm + mi300x), medians of N calls, the slowest rank's:
- round trip: an empty synchronize, in a loop;
- back to back: a 4 KiB all_reduce through the kpt backend, N posts in a row (each returns at
  once; the daemon falls behind). The host cost the target names (<= 1.5 round trips), timed
  as the round trip is, in a hot loop;
- one at a time: the same all_reduce timed alone, an untimed synchronize after each. The
  posting thread's CPU time (time.thread_time) is printed for both loops: here it slept in the
  synchronize while the daemon ran on its core, and Python restarts with cold caches;
- sustained: the wall time of the N back-to-back posts plus the synchronize that waits for the
  last, per call: the daemon's throughput (its simulation of each collective), with the daemon
  process's CPU per collective over the whole run.

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
from pathlib import Path

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
    round_trips, alone, back_to_back, alone_cpu, back_to_back_cpu = [], [], [], [], []
    for _ in range(calls):
        start = time.perf_counter()
        torch.kpt_sim.synchronize()
        round_trips.append(time.perf_counter() - start)
    dist.barrier()
    for _ in range(calls):
        start, cpu = time.perf_counter(), time.thread_time()
        dist.all_reduce(x)
        alone.append(time.perf_counter() - start)
        alone_cpu.append(time.thread_time() - cpu)
        torch.kpt_sim.synchronize()  # untimed: the daemon runs it before the next post
    dist.barrier()
    sustained = time.perf_counter()
    for _ in range(calls):
        start, cpu = time.perf_counter(), time.thread_time()
        dist.all_reduce(x)
        back_to_back.append(time.perf_counter() - start)
        back_to_back_cpu.append(time.thread_time() - cpu)
    torch.kpt_sim.synchronize()
    sustained = (time.perf_counter() - sustained) / calls
    dist.barrier()
    dist.destroy_process_group()
    medians = {"round_trip": statistics.median(round_trips), "alone": statistics.median(alone),
               "back_to_back": statistics.median(back_to_back), "sustained": sustained,
               "alone_cpu": statistics.median(alone_cpu),
               "back_to_back_cpu": statistics.median(back_to_back_cpu)}  # fmt: skip
    print("RESULT " + json.dumps(medians), flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
            daemon_cpu = cpu_seconds(daemon.pid)
            procs = [subprocess.Popen(
                [sys.executable, __file__, "--rank", str(r), "--folder", folder,
                 "--calls", str(args.calls)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env=dict(os.environ, KPT_SIM_ENDPOINT=daemon.endpoint,
                         KPT_SIM_VISIBLE_DEVICES=str(r), OMP_NUM_THREADS="1"),
            ) for r in range(2)]  # fmt: skip
            try:
                outputs = [p.communicate(timeout=600)[0] for p in procs]
                daemon_cpu = cpu_seconds(daemon.pid) - daemon_cpu
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
    worst = {key: max(r[key] for r in results) for key in results[0]}
    trip = worst["round_trip"]
    collectives = 3 * args.calls + 1  # each rank's, in the three loops (and the warm-up)
    rows = [
        ("daemon round trip (empty synchronize)", trip),
        ("4 KiB all_reduce, back to back", worst["back_to_back"]),
        ("4 KiB all_reduce, one at a time", worst["alone"]),
        ("sustained, per all_reduce (daemon-bound)", worst["sustained"]),
    ]
    print(f"2 kpt_sim ranks on one daemon, medians of {args.calls} calls (slowest rank)")
    print(f"| {'measure':<42} | {'us':>8} | {'/ round trip':>12} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 14}|")
    for name, seconds in rows:
        print(f"| {name:<42} | {seconds * 1e6:8.1f} | {seconds / trip:12.2f} |")
    print(f"daemon CPU per collective (whole run, both ranks' parts): "
          f"{daemon_cpu / collectives * 1e6:.0f} us")  # fmt: skip
    print(f"the posting thread's CPU per all_reduce (time.thread_time): back to back "
          f"{worst['back_to_back_cpu'] * 1e6:.1f} us, one at a time "
          f"{worst['alone_cpu'] * 1e6:.1f} us")  # fmt: skip
    print(f"collective / round trip (target <= 1.5): {worst['back_to_back'] / trip:.2f}")


if __name__ == "__main__":
    main()
