"""Distributed aggregation throughput: summaries/s merged by an Aggregator over kpt-wire.

Baseline (same run): the naive aggregator without the wire, Summary.from_dict + one merge per
summary in one process; a second in-process row batches merges as the Aggregator does. Then
over kpt-wire: one in-process client thread, and N worker processes (started before timing;
the rate is measured from the first summary merged to the last).

    python benchmarks/bench_distributed.py [--summaries 20000] [--workers 4] [--batch 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from kpt.abtest import Aggregator, Reporter, Summary, launch_workers


def cast_summaries(shard, shards, reporter, count=1000, batch=100, start_at=0.0):
    """Worker task: build one small summary, then cast it ``count`` times (arm by shard)."""
    summary = Summary().update(np.random.default_rng(shard).normal(10, 1, batch))
    delay = start_at - time.time()  # line the workers up so that they stream at once
    if 0 < delay < 60:
        time.sleep(delay)
    for _ in range(count):
        reporter.send_summary("ab"[shard % 2], summary)


def in_process_rate(payload: dict, count: int, batch: int = 1) -> float:
    """Decode and merge without the wire, ``batch`` summaries per merge_all."""
    merged = Summary()
    started = time.perf_counter()
    for start in range(0, count, batch):
        merged.merge_all([Summary.from_dict(payload) for _ in range(min(batch, count - start))])
    return count / (time.perf_counter() - started)


def from_dicts_rate(payload: dict, count: int, batch: int = 512) -> float:
    """Decode and merge ``batch`` payloads at a time with Summary.from_dicts."""
    merged = Summary()
    started = time.perf_counter()
    for start in range(0, count, batch):
        merged.merge(Summary.from_dicts([payload] * min(batch, count - start)))
    return count / (time.perf_counter() - started)


def wire_thread_rate(payload_summary: Summary, count: int) -> float:
    from kpt.wire import Client

    with Aggregator() as aggregator, Client(aggregator.endpoint) as client:
        reporter = Reporter(client, "thread")
        started = time.perf_counter()
        for _ in range(count):
            reporter.send_summary("a", payload_summary)
        client.call("done", {"worker": "thread"})  # answered after every cast was merged
        elapsed = time.perf_counter() - started
        assert aggregator.snapshot()["summaries_received"] == count
    return count / elapsed


def worker_processes_rate(total: int, workers: int, batch: int) -> float:
    here = str(Path(__file__).parent)
    env = {"PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    per_worker = total // workers
    options = {"count": per_worker, "batch": batch, "start_at": time.time() + 8.0}
    with Aggregator() as aggregator:
        with launch_workers(
            aggregator.endpoint, "bench_distributed:cast_summaries", workers,
            options=options, env=env, flush_every=10**9,
        ) as pool:  # fmt: skip
            codes = pool.wait(timeout=120)
        if any(codes):
            sys.exit(f"workers failed with exit codes {codes}")
        status = aggregator.snapshot()
    assert status["summaries_received"] == per_worker * workers, status["summaries_received"]
    return status["receive_rate_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summaries", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="values in each summary")
    args = parser.parse_args()
    summary = Summary().update(np.random.default_rng(0).normal(10, 1, args.batch))
    payload = summary.to_dict()
    baseline = in_process_rate(payload, args.summaries)
    rows = [
        ("in process, merge each (baseline)", baseline),
        ("in process, merge_all by 512", in_process_rate(payload, args.summaries, 512)),
        ("in process, from_dicts by 512", from_dicts_rate(payload, args.summaries, 512)),
        ("kpt-wire, 1 client thread", wire_thread_rate(summary, args.summaries)),
        (f"kpt-wire, {args.workers} worker processes",
         worker_processes_rate(args.summaries, args.workers, args.batch)),
    ]  # fmt: skip
    print(f"Aggregation of {args.summaries} summaries ({args.batch} values each)")
    print(f"{'path':<34}{'summaries/s':>14}{'vs baseline':>13}")
    for name, rate in rows:
        print(f"{name:<34}{rate:>14,.0f}{rate / baseline:>12.2f}x")


if __name__ == "__main__":
    main()
