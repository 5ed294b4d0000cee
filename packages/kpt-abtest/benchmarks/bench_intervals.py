"""Method-own intervals: Hodges-Lehmann + Moses by selection vs forming every difference.

The Moses interval needs three order statistics of the n_a * n_b differences b_j - a_i. kpt
finds them by bisection on the value with an O(n log n) count per step (memory O(n)); the
baseline, measured in the same run on the same data, forms all differences and partitions.

    python packages/kpt-abtest/benchmarks/bench_intervals.py [--n 3000]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="values per arm")
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


if __name__ == "__main__":
    main()
