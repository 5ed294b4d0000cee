"""Method-own intervals: Hodges-Lehmann + Moses by selection vs forming every difference.

With --simulate it also prints the issue-16 statistics quoted in docs/abtest.md: how often a
Welch interval vs the Moses interval disagrees with the Mann-Whitney p-value, the coverage of
the anytime-valid vs the fixed-horizon interval after a sequential stop, and the regression
gate's false-alarm rate and power.

The Moses interval needs three order statistics of the n_a * n_b differences b_j - a_i. kpt
finds them by bisection on the value with an O(n log n) count per step (memory O(n)); the
baseline, measured in the same run on the same data, forms all differences and partitions.

    python packages/kpt-abtest/benchmarks/bench_intervals.py [--n 3000] [--simulate]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kpt.abtest._test_inversion import _kth_difference, hodges_lehmann


def brute_force(a, b, alpha):
    from scipy import stats

    diffs = np.subtract.outer(b, a).reshape(-1)
    n = diffs.size
    z = stats.norm.ppf(1 - alpha / 2)
    sigma = np.sqrt(a.size * b.size * (a.size + b.size + 1) / 12.0)
    k = int(np.floor(n / 2 - z * sigma - 0.5)) + 1
    ranks = sorted({(n + 1) // 2 - 1, n // 2, k - 1, n - k})
    part = np.partition(diffs, ranks)
    return (part[(n + 1) // 2 - 1] + part[n // 2]) / 2, (part[k - 1], part[n - k])


def simulate() -> None:
    import kpt.abtest as ab

    rng = np.random.default_rng(3)
    welch_off = moses_off = 0
    for _ in range(300):
        a, b = rng.standard_t(1.5, 40), rng.standard_t(1.5, 40) + rng.choice([0.0, 0.4])
        rank, welch = ab.compare(a, b, method="mann_whitney"), ab.compare(a, b)
        significant = rank.p_value < 0.05
        welch_off += (welch.ci[0] > 0 or welch.ci[1] < 0) != significant
        moses_off += (rank.ci[0] > 0 or rank.ci[1] < 0) != significant
    print(f"Mann-Whitney p vs interval, 300 t(1.5) pairs, n=40: Welch interval disagrees "
          f"{welch_off}, Moses interval {moses_off}")  # fmt: skip

    anytime = fixed = stopped = 0
    for seed in range(300):
        draw = np.random.default_rng(100 + seed)
        arms = {"base": lambda d=draw: d.normal(10, 1), "new": lambda d=draw: d.normal(9.7, 1)}
        result = ab.Experiment(arms, seed=100 + seed, max_trials=120, warmup=0).run()
        low, high = result.anytime["new"]["interval"]
        anytime += low <= -0.3 <= high
        c = result.comparisons["new"]
        fixed += c.ci[0] <= -0.3 <= c.ci[1]
        stopped += result.stopped_by.startswith("the sequential")
    print(
        f"after sequential looks (300 experiments, effect -0.3 sd, {stopped} stopped early): "
        f"coverage anytime-valid {anytime / 300:.3f}, fixed-horizon Welch {fixed / 300:.3f}"
    )

    keys = [f"cell{i}" for i in range(12)]

    def cells(slow=None, factor=1.0):
        return {k: {"samples": 0.01 * (1 + i) * (factor if k == slow else 1.0)
                    * (1 + 0.01 * rng.standard_normal(20)), "clock": "measured"}
                for i, k in enumerate(keys)}  # fmt: skip

    alarms = caught = 0
    for _ in range(1000):
        base = {"cells": cells()}
        alarms += ab.compare_to_baseline(cells(), base).failed
        slow = ab.compare_to_baseline(cells(keys[4], 1.05), base)
        caught += slow.verdicts[keys[4]].verdict == "regressed"
    print(f"regression gate, 12 cells x 20 trials, 1% noise, 1000 reruns: false alarms "
          f"{alarms / 1000:.3f}, one cell 5% slower caught {caught / 1000:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="values per arm")
    parser.add_argument("--simulate", action="store_true", help="also the statistics above")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 1, args.n), rng.lognormal(0.1, 1, args.n)
    started = time.perf_counter()
    ours = hodges_lehmann(a, b, 0.05)
    kpt_s = time.perf_counter() - started
    started = time.perf_counter()
    ref = brute_force(a, b, 0.05)
    base_s = time.perf_counter() - started
    assert np.isclose(ours[0], ref[0]) and np.allclose(ours[1], ref[1]), (ours, ref)
    assert _kth_difference(np.sort(a), np.sort(b), 1) == np.min(np.subtract.outer(b, a))
    print(f"n = {args.n} per arm ({args.n**2:,} differences): Hodges-Lehmann + Moses interval")
    print(f"  kpt (selection, O(n) memory): {kpt_s:.3f} s")
    print(f"  all differences + np.partition: {base_s:.3f} s ({args.n**2 * 8 / 2**20:.0f} MiB)")
    print(f"  ratio: {base_s / kpt_s:.1f}x; identical results")
    if args.simulate:
        simulate()


if __name__ == "__main__":
    main()
