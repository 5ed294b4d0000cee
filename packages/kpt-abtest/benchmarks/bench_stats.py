"""kpt.abtest against scipy on the same data in the same run; prints a table with ratios.

Run: python packages/kpt-abtest/benchmarks/bench_stats.py [--quick]
"""

import sys
import time

import numpy as np
from scipy import stats

import kpt.abtest as ab
from kpt.abtest._quantiles import quantiles_with_se
from kpt.abtest._sequential import mixture_scale, normal_mixture_radius

QUICK = "--quick" in sys.argv


def timed(fn, repeat=1):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def row(name, ours, base, note=""):
    print(f"| {name:<44} | {ours:>10.4g} | {base:>10.4g} | {base / ours:>6.2f}x | {note}")


def main() -> None:
    rng = np.random.default_rng(0)
    n = 10**6 if QUICK else 10**7
    a, b = rng.lognormal(0, 1, n), rng.lognormal(0.001, 1, n)
    print("| task | kpt (s) | scipy/numpy (s) | speedup | note")
    print("|---|---|---|---|---")

    def ours():
        ab.compare(a, b)
        quantiles_with_se(a, [0.5, 0.95, 0.99])
        return quantiles_with_se(b, [0.5, 0.95, 0.99])

    def base():
        stats.ttest_ind(b, a, equal_var=False)
        return np.quantile(a, [0.5, 0.95, 0.99]), np.quantile(b, [0.5, 0.95, 0.99])

    t_ours, _ = timed(ours, 2)
    t_base, _ = timed(base, 2)
    row(f"Welch + p50/p95/p99 with intervals, n={n:.0e}/arm", t_ours, t_base,
        "baseline: scipy Welch + np.quantile point estimates only (no intervals)")  # fmt: skip

    workers = [ab.Summary(seed=i).update(rng.lognormal(size=1000)) for i in range(1000)]
    dicts = [w.to_dict() for w in workers]
    t_merge, _ = timed(
        lambda: ab.Summary(seed=0).merge_all(ab.Summary.from_dict(d) for d in dicts), 3
    )
    raw = [rng.lognormal(size=1000) for _ in range(1000)]
    t_concat, _ = timed(lambda: np.quantile(np.concatenate(raw), [0.5, 0.95, 0.99]), 3)
    row("merge 1,000 worker summaries (from dicts)", t_merge, t_concat,
        "baseline: ship raw samples, concatenate, np.quantile")  # fmt: skip

    x = rng.lognormal(size=10**4 if QUICK else 10**5)
    y = rng.lognormal(size=x.size)
    t_ours, r1 = timed(lambda: ab.bootstrap(x, y, n_resamples=10_000, seed=1))
    t_base, r2 = timed(lambda: stats.bootstrap(
        (y, x), lambda u, v, axis: u.mean(axis) - v.mean(axis), n_resamples=10_000,
        method="BCa", random_state=1))  # fmt: skip
    cis = f"CI kpt {np.round(r1.ci, 4)} scipy {np.round(tuple(r2.confidence_interval), 4)}"
    row(f"BCa bootstrap, 10,000 resamples, n={x.size:.0e}/arm", t_ours, t_base, cis)

    sequential_vs_fixed(rng)
    naive_peeking(rng)


def sequential_vs_fixed(rng, effect=0.2, sd=1.0, reps=2000, batch=20):
    """Average per-arm sample size of SequentialTest vs the fixed-horizon test of equal power."""
    n_fixed = ab.sample_size(effect, sd, power=0.8)
    tuning = n_fixed // 2
    m = mixture_scale(0.05, tuning)
    for max_mult in (2.0, 3.0):
        looks = int(np.ceil(max_mult * n_fixed / batch))
        ns = np.arange(1, looks + 1) * batch
        print(f"\nsequential vs fixed horizon (effect {effect} sd, fixed n = {n_fixed}/arm "
              f"for 80% power, tuning_n = {tuning}, max_n = {ns[-1]})")  # fmt: skip
        for true in (effect, 2 * effect, 0.0):
            a = rng.normal(0, sd, (reps, ns[-1]))
            b = rng.normal(true, sd, (reps, ns[-1]))
            ma, mb = np.cumsum(a, 1)[:, ns - 1] / ns, np.cumsum(b, 1)[:, ns - 1] / ns
            va = (np.cumsum(a * a, 1)[:, ns - 1] - ns * ma**2) / (ns - 1)
            vb = (np.cumsum(b * b, 1)[:, ns - 1] - ns * mb**2) / (ns - 1)
            r = normal_mixture_radius(np.sqrt(va / ns + vb / ns), ns, 0.05, m)
            hit = np.abs(mb - ma) > r
            stop = np.where(hit.any(1), ns[hit.argmax(1)], ns[-1])
            print(f"  true effect {true:>4}: rejects {hit.any(1).mean():.3f}, mean n "
                  f"{stop.mean():7.0f}, ratio to fixed {stop.mean() / n_fixed:.2f}")  # fmt: skip
        del a, b


def naive_peeking(rng, reps=4000, looks=30, batch=50):
    """A/A: a t-test checked after each of 30 batches vs kpt's SequentialTest boundary."""
    ns = np.arange(1, looks + 1) * batch
    a, b = rng.normal(size=(reps, ns[-1])), rng.normal(size=(reps, ns[-1]))
    ma, mb = np.cumsum(a, 1)[:, ns - 1] / ns, np.cumsum(b, 1)[:, ns - 1] / ns
    va = (np.cumsum(a * a, 1)[:, ns - 1] - ns * ma**2) / (ns - 1)
    vb = (np.cumsum(b * b, 1)[:, ns - 1] - ns * mb**2) / (ns - 1)
    se = np.sqrt(va / ns + vb / ns)
    naive = (np.abs(mb - ma) / se > stats.norm.ppf(0.975)).any(1).mean()
    kpt = (np.abs(mb - ma) > normal_mixture_radius(se, ns, 0.05, mixture_scale(0.05, 500))).any(1)
    print(f"\nA/A, {looks} looks of {batch}/arm, {reps} runs, alpha 0.05: naive repeated t-test "
          f"false positives {naive:.3f}; kpt SequentialTest {kpt.mean():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
