"""A captured graph's launch against the same launches sent one by one, in the same run.

    python simulator/benchmarks/bench_graph_launch.py [--nodes 1600] [--repeats 20]

A timing-only daemon in another process (h200). One "step" is `--nodes` elementwise launches
(a Llama-8B decode step issues about 1,600); the baseline sends them as launches (batched
casts, as the kpt_sim device does), the other captures them once (graph_begin/end) and sends
one graph_launch per step. Each step ends with a synchronize, so the figure is the wall time
until the daemon has simulated the step; the simulated times of both must agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

from kpt.sim import OpCost, SimClient, TensorRef, start_daemon


def step_times(run, client: SimClient, repeats: int) -> tuple[float, float]:
    """(median wall ms, simulated ms) of one step."""
    walls, simulated = [], 0.0
    for _ in range(repeats):
        before = client.synchronize()
        start = time.perf_counter()
        run()
        simulated = client.synchronize() - before
        walls.append(time.perf_counter() - start)
    return statistics.median(walls) * 1e3, simulated * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1600)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    daemon = start_daemon(profile="h200", devices=1, numerics=False)
    try:
        client = SimClient(daemon.endpoint)
        refs = [TensorRef.contiguous(client.alloc(0, 1 << 20), "bfloat16", (1 << 19,))
                for _ in range(8)]  # fmt: skip

        def launches() -> None:
            for i in range(args.nodes):
                client.launch(0, "add", [refs[i % 8], refs[(i + 1) % 8]], [refs[(i + 2) % 8]],
                              cost=OpCost("elementwise", 5e5, 3e6 + i % 50, "bf16"))  # fmt: skip

        client.graph("begin", 1, device=0)
        launches()
        client.graph("end", 1, device=0)
        one_by_one = step_times(launches, client, args.repeats)
        replayed = step_times(lambda: client.graph("launch", 1), client, args.repeats)
        client.close()
    finally:
        daemon.stop()
    print(f"# {args.nodes} launches per step, h200 timing-only, median of {args.repeats}")
    print("| step | wall ms | simulated ms |")
    print("|---|---|---|")
    for name, (wall, sim) in (("launches one by one (baseline)", one_by_one),
                              ("one graph launch", replayed)):  # fmt: skip
        print(f"| {name} | {wall:.2f} | {sim:.3f} |")
    speedup, ratio = one_by_one[0] / replayed[0], replayed[1] / one_by_one[1]
    print(f"\nwall: {speedup:.1f}x faster replayed; simulated ratio {ratio:.3f} "
          "(below 1: the replay's host pays one launch)")  # fmt: skip


if __name__ == "__main__":
    main()
