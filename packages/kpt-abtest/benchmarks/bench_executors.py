"""evaluate_distributed end to end: worker processes (the baseline) against Ray tasks.

Each run starts an aggregator and N workers, each observing ``--values`` values per arm, and
waits for all of them; the wall time includes starting the workers (Python, numpy, scipy and
kpt-wire imports), which dominates a short evaluation. Ray runs on a local Ray started once
before timing (``ray.init(num_cpus=N)``, as a user keeps one up); its start is timed apart.
Medians of ``--repeats`` runs, interleaved, in one process.

    python benchmarks/bench_executors.py [--workers 2] [--values 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from kpt.abtest import evaluate_distributed

TASK = "bench_executors:observe_shard"
ENV = {
    "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
}


def observe_shard(shard, shards, reporter, values=20000):
    """Worker task: latencies of two arms, 1,000 values per observe call."""
    rng = np.random.default_rng(shard)
    for _ in range(values // 1000):
        reporter.observe("a", rng.normal(10.0, 1.0, 1000))
        reporter.observe("b", rng.normal(10.1, 1.0, 1000))


def timed(n_workers: int, values: int, **options) -> float:
    started = time.perf_counter()
    status = evaluate_distributed(
        TASK, n_workers, options={"values": values}, env=ENV, timeout=600, **options
    )
    wall = time.perf_counter() - started
    assert status["arms"]["a"]["n"] == n_workers * (values // 1000) * 1000, status["arms"]
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="workers per evaluation")
    parser.add_argument("--values", type=int, default=20000, help="values per arm per worker")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per executor")
    args = parser.parse_args()
    try:
        import ray
    except ImportError:  # the bench session installs the bench extras only
        print("Ray is not installed (pip install 'kpt-abtest[ray]'): nothing to compare")
        return

    started = time.perf_counter()
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False,
             object_store_memory=100 * 2**20, log_to_driver=False)  # fmt: skip
    ray_start = time.perf_counter() - started
    rows: dict[str, list[float]] = {"processes": [], "ray": [], "ray, curve=True": []}
    try:
        timed(args.workers, 1000, executor="ray")  # Ray's first workers start cold
        for _ in range(args.repeats):
            rows["processes"].append(timed(args.workers, args.values))
            rows["ray"].append(timed(args.workers, args.values, executor="ray"))
            rows["ray, curve=True"].append(
                timed(args.workers, args.values, executor="ray", curve=True)
            )
    finally:
        ray.shutdown()
    base = statistics.median(rows["processes"])
    print(f"{args.workers} workers x {args.values} values per arm; median of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| executor | wall s (median) | vs processes |")
    print("|---|---|---|")
    for name, walls in rows.items():
        median = statistics.median(walls)
        print(f"| {name} | {median:.2f} | {median / base:.2f}x |")
    print(f"| ray.init (local, once) | {ray_start:.2f} | - |")


if __name__ == "__main__":
    main()
