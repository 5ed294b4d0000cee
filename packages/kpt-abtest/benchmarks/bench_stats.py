"""kpt.abtest against scipy/numpy on the same data in the same run; prints tables with ratios.

Run: python packages/kpt-abtest/benchmarks/bench_stats.py [--quick] [--only speed|sequential]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

import kpt.abtest as ab
from kpt.abtest._design import truncated_design
from kpt.abtest._quantiles import quantiles_with_se
from kpt.abtest._sequential import mixture_scale, normal_mixture_radius

LEVELS = [0.5, 0.95, 0.99]


def timed(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def row(name, ours, base, note=""):
    print(f"| {name} | {ours:.4g} | {base:.4g} | {base / ours:.2f}x | {note} |")


def partition_intervals(x):
    """The previous implementation: one np.partition at every rank the intervals need."""
    n, z = x.size, stats.norm.ppf(0.975)
    ranks = set()
    for q in LEVELS:
        h, spread = (n - 1) * q, z * np.sqrt(n * q * (1 - q))
        ranks |= {int(h), int(np.ceil(h)), int(n * q - spread) - 1, int(np.ceil(n * q + spread))}
    return np.partition(x, sorted(ranks))


def speed(quick: bool) -> None:
    rng = np.random.default_rng(0)
    n = 10**6 if quick else 10**7
    a, b = rng.lognormal(0, 1, n), rng.lognormal(0.001, 1, n)
    print("| task | kpt (s) | baseline (s) | speedup | baseline, note |")
    print("|---|---|---|---|---|")

    def ours():
        ab.compare(a, b)
        return quantiles_with_se(a, LEVELS), quantiles_with_se(b, LEVELS)

    def ours_public():
        return [ab.compare(a, b, m) for m in ("mean", "median", "p95", "p99")]

    def scipy_points():
        stats.ttest_ind(b, a, equal_var=False)
        return np.quantile(a, LEVELS), np.quantile(b, LEVELS)

    def previous():
        stats.ttest_ind(b, a, equal_var=False)
        return partition_intervals(a), partition_intervals(b)

    t_ours, _ = timed(ours, 3)
    t_public, _ = timed(ours_public, 2)
    t_scipy, _ = timed(scipy_points, 2)
    t_prev, _ = timed(previous, 2)
    label = f"Welch + p50/p95/p99 with intervals, n={n:.0e}/arm"
    row(label, t_ours, t_scipy, "scipy ttest_ind + np.quantile, point estimates only")
    row(label, t_ours, t_prev, "same intervals by np.partition at every rank (previous kpt)")
    row("4 x compare() (mean, median, p95, p99), same data", t_public, t_scipy,
        "scipy ttest_ind + np.quantile, point estimates only")  # fmt: skip

    workers = [ab.Summary(seed=i).update(rng.lognormal(size=1000)) for i in range(1000)]
    dicts = [w.to_dict() for w in workers]
    raw = [rng.lognormal(size=1000) for _ in range(1000)]
    t_batch, _ = timed(lambda: ab.Summary.from_dicts(dicts, seed=0), 5)
    t_each, _ = timed(
        lambda: ab.Summary(seed=0).merge_all(ab.Summary.from_dict(d) for d in dicts), 5
    )
    t_concat, _ = timed(lambda: np.quantile(np.concatenate(raw), LEVELS), 5)
    row("merge 1,000 worker summaries: Summary.from_dicts", t_batch, t_concat,
        "ship raw samples, concatenate, np.quantile")  # fmt: skip
    row("merge 1,000 worker summaries: from_dict + merge_all", t_each, t_concat,
        "ship raw samples, concatenate, np.quantile")  # fmt: skip

    m = 10**4 if quick else 10**5
    x, y = rng.lognormal(size=m), rng.lognormal(size=m)

    def scipy_boot(statistic, resamples):
        return stats.bootstrap((y, x), statistic, n_resamples=resamples, method="percentile",
                               random_state=1, vectorized=True)  # fmt: skip

    def mean_diff(u, v, axis):
        return u.mean(axis) - v.mean(axis)

    def p99_diff(u, v, axis):
        return np.quantile(u, 0.99, axis=axis) - np.quantile(v, 0.99, axis=axis)

    t_bca, r_bca = timed(lambda: ab.bootstrap(x, y, n_resamples=10_000, seed=1))
    t_pct, r_pct = timed(lambda: ab.bootstrap(x, y, n_resamples=10_000, method="percentile"))
    t_ref, r_ref = timed(lambda: scipy_boot(mean_diff, 10_000))
    ci = np.round(tuple(r_ref.confidence_interval), 4)
    row(f"bootstrap mean diff, BCa, 10,000 x n={m:.0e}/arm", t_bca, t_ref,
        f"scipy percentile (its BCa jackknife is n^2 = {m * m:.0e} values); CI kpt "
        f"{np.round(r_bca.ci, 4)} scipy {ci}")  # fmt: skip
    row(f"bootstrap mean diff, percentile, 10,000 x n={m:.0e}/arm", t_pct, t_ref,
        f"scipy percentile; CI kpt {np.round(r_pct.ci, 4)}")  # fmt: skip
    t_q, r_q = timed(lambda: ab.bootstrap(x, y, statistic="p99", n_resamples=10_000, seed=1))
    t_qref, r_qref = timed(lambda: scipy_boot(p99_diff, 1_000))
    row(f"bootstrap p99 diff, BCa, 10,000 x n={m:.0e}/arm", t_q, 10 * t_qref,
        f"scipy percentile at 1,000 resamples x 10; CI kpt {np.round(r_q.ci, 3)} scipy "
        f"{np.round(tuple(r_qref.confidence_interval), 3)}")  # fmt: skip


def _z_paths(rng, reps, n, shift, ns):
    a, b = rng.normal(0, 1, (reps, n)), rng.normal(shift, 1, (reps, n))
    ma, mb = np.cumsum(a, 1)[:, ns - 1] / ns, np.cumsum(b, 1)[:, ns - 1] / ns
    with np.errstate(divide="ignore", invalid="ignore"):  # n = 1 has no variance; never tested
        va = (np.cumsum(a * a, 1)[:, ns - 1] - ns * ma**2) / (ns - 1)
        vb = (np.cumsum(b * b, 1)[:, ns - 1] - ns * mb**2) / (ns - 1)
    return mb - ma, np.sqrt(va / ns + vb / ns)


def sequential_vs_fixed(quick: bool, effect=0.2, min_n=20) -> None:
    """Average per-arm n of each sequential design over the fixed-horizon n of equal power."""
    for power in (0.8, 0.9):
        _sequential_table(quick, effect, power, min_n)
    print("closed form, looks after every observation, mean n / fixed n at 1x the effect: "
          + ", ".join(f"power {p}: {truncated_design(0.05, p).expected_n_ratio(1.0):.3f}"
                      for p in (0.8, 0.9, 0.95)))  # fmt: skip


def _sequential_table(quick: bool, effect: float, power: float, min_n: int) -> None:
    reps = 500 if quick else 2000
    n_fixed = ab.sample_size(effect, 1.0, power=power)
    rng = np.random.default_rng(1)
    print(f"\nSequential vs fixed horizon: planned effect {effect} sd, fixed n = {n_fixed}/arm "
          f"(alpha 0.05, power {power}), {reps} runs per cell ({4 * reps} for A/A); cells: share "
          "rejecting in the right direction (A/A: either) / mean n over fixed n")  # fmt: skip
    multiples = (0.0, 0.5, 1.0, 1.5, 2.0)
    print("| design | looks every | max n | " + " | ".join(f"{k}x effect" for k in multiples))
    print("|---|---|---|" + "---|" * len(multiples))
    designs = []
    for batch in (1, 20):
        design = truncated_design(0.05, power, round(batch / n_fixed, 4))
        max_n = int(np.ceil(design.max_ratio * n_fixed))

        def line(est, se, ns, d=design, mx=max_n):
            return se * d.z_boundary(ns / mx)

        designs.append((f"planned (plan_n={n_fixed}, power={power})", batch, max_n, line))
    m = mixture_scale(0.05, n_fixed // 2)
    designs.append((f"open mixture (tuning_n={n_fixed // 2})", 20, 2 * n_fixed,
                    lambda est, se, ns: normal_mixture_radius(se, ns, 0.05, m)))  # fmt: skip
    for name, batch, max_n, radius in designs:
        ns = np.minimum(np.arange(1, -(-max_n // batch) + 1) * batch, max_n)
        cells = []
        for k in multiples:
            runs = 4 * reps if k == 0 else reps  # the A/A rate needs the smaller MC error
            est, se = _z_paths(rng, runs, max_n, k * effect, ns)
            hit = (np.abs(est) > radius(est, se, ns)) & (ns >= min_n)
            first = hit.argmax(1)
            stop = np.where(hit.any(1), ns[first], max_n)
            right = hit.any(1) & (est[np.arange(runs), first] > 0 if k else hit.any(1))
            cells.append(f"{right.mean():.3f} / {stop.mean() / n_fixed:.2f}")
        print(f"| {name} | {batch} | {max_n} | " + " | ".join(cells))


def naive_peeking(quick: bool, looks=30, batch=50) -> None:
    """A/A: a t-test checked after each of 30 batches vs kpt's SequentialTest boundary."""
    reps = 1000 if quick else 4000
    rng = np.random.default_rng(2)
    ns = np.arange(1, looks + 1) * batch
    est, se = _z_paths(rng, reps, ns[-1], 0.0, ns)
    naive = (np.abs(est) / se > stats.norm.ppf(0.975)).any(1).mean()
    kpt = (np.abs(est) > normal_mixture_radius(se, ns, 0.05, mixture_scale(0.05, 500))).any(1)
    print(f"\nA/A, {looks} looks of {batch}/arm, {reps} runs, alpha 0.05: naive repeated t-test "
          f"false positives {naive:.3f}; kpt SequentialTest {kpt.mean():.3f}")  # fmt: skip


def quantile_sequential(quick: bool, looks=50, batch=20) -> None:
    """The p95 sequential test under continuous monitoring: A/A rate and power at +30%."""
    reps = 100 if quick else 400
    rng = np.random.default_rng(3)
    for shift in (1.0, 1.3):
        stopped = 0
        for _ in range(reps):
            test = ab.SequentialTest(metric="p95", tuning_n=300)
            for _ in range(looks):
                if test.update(rng.lognormal(0, 1, batch), shift * rng.lognormal(0, 1, batch)) \
                        != "continue":  # fmt: skip
                    break
            stopped += test.decision in ("a_better", "b_better")
        print(f"p95 sequential, lognormal, b = {shift} x a, {looks} looks of {batch}/arm, "
              f"{reps} runs: rejects {stopped / reps:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller data, fewer runs")
    parser.add_argument("--only", choices=("speed", "sequential"))
    args = parser.parse_args()
    if args.only in (None, "speed"):
        speed(args.quick)
    if args.only in (None, "sequential"):
        sequential_vs_fixed(args.quick)
        naive_peeking(args.quick)
        quantile_sequential(args.quick)


if __name__ == "__main__":
    main()
