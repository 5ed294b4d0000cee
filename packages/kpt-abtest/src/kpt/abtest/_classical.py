"""Classical two-sample tests: Welch t, paired t, permutation, Mann-Whitney U, proportions."""

from __future__ import annotations

import numpy as np
from scipy import stats

from kpt.abtest._estimate import Estimate
from kpt.abtest._validate import as_sample, check_paired, check_positive_int

_CHUNK = 1 << 16  # 512 KiB of float64: the centred chunk stays in cache


def mean_var(x: np.ndarray) -> tuple[float, float]:
    """Mean and sample variance (ddof=1): centred before squaring, so no cancellation, in
    cache-sized chunks so that 1e7 values need no 80 MB temporary."""
    mean = float(x.mean())
    squares = 0.0
    for start in range(0, x.size, _CHUNK):
        centred = x[start : start + _CHUNK] - mean
        centred *= centred  # not np.dot: a BLAS call per chunk can stall on busy threads
        squares += float(centred.sum())
    return mean, squares / (x.size - 1)


def welch(a: np.ndarray, b: np.ndarray) -> Estimate:
    """Difference of means with Welch's standard error and Satterthwaite degrees of freedom."""
    (ma, var_a), (mb, var_b) = mean_var(a), mean_var(b)
    na, nb = a.size, b.size
    va, vb = var_a / na, var_b / nb
    se = float(np.sqrt(va + vb))
    if se == 0.0:
        df = float(na + nb - 2)
    else:
        df = float((va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1)))
    return Estimate(ma, mb, float(np.sqrt(va)), float(np.sqrt(vb)), se, df)


def paired_t(a: np.ndarray, b: np.ndarray) -> Estimate:
    """Mean of b - a over matched units; the covariance enters the relative interval."""
    check_paired(a, b)
    n = a.size
    d = b - a
    cov = float(np.cov(a, b, ddof=1)[0, 1]) / n
    return Estimate(
        float(a.mean()),
        float(b.mean()),
        float(a.std(ddof=1) / np.sqrt(n)),
        float(b.std(ddof=1) / np.sqrt(n)),
        float(d.std(ddof=1) / np.sqrt(n)),
        float(n - 1),
        cov,
    )


def permutation_pvalue(a, b, *, n_resamples: int = 9999, paired: bool = False, seed=None) -> float:
    """Two-sided permutation p-value for a difference of means (exact in size for any n).

    Unpaired: labels are shuffled. Paired: the sign of each difference is flipped at random.
    All resamples are drawn as one matrix, so keep n * n_resamples within memory (small n).
    """
    a, b = as_sample(a, "a"), as_sample(b, "b")
    n_resamples = check_positive_int(n_resamples, "n_resamples")
    rng = np.random.default_rng(seed)
    if paired:
        check_paired(a, b)
        d = b - a
        observed = abs(d.mean())
        signs = rng.choice(np.array([-1.0, 1.0]), size=(n_resamples, d.size))
        null = np.abs((signs * d).mean(axis=1))
    else:
        pooled = np.concatenate([a, b])
        observed = abs(b.mean() - a.mean())
        perms = rng.permuted(np.broadcast_to(pooled, (n_resamples, pooled.size)), axis=1)
        null = np.abs(perms[:, a.size :].mean(axis=1) - perms[:, : a.size].mean(axis=1))
    # Tolerance so that ties from float rounding count as "at least as extreme".
    hits = np.count_nonzero(null >= observed * (1 - 1e-12))
    return float((1 + hits) / (1 + n_resamples))


def mann_whitney(a, b) -> tuple[float, float]:
    """Mann-Whitney U statistic of b against a and its two-sided p-value (scipy's)."""
    a, b = as_sample(a, "a", min_size=1), as_sample(b, "b", min_size=1)
    res = stats.mannwhitneyu(b, a, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def _check_binary(x: np.ndarray, name: str) -> None:
    if not np.isin(x, (0.0, 1.0)).all():
        raise ValueError(
            f"metric='proportion' needs 0/1 outcomes in {name}; found values such as "
            f"{x[~np.isin(x, (0.0, 1.0))][:3].tolist()}"
        )


def two_proportion(successes_a: int, n_a: int, successes_b: int, n_b: int) -> Estimate:
    """Difference of two proportions: pooled z for the p-value, unpooled SE for the interval."""
    for name, s, n in (("a", successes_a, n_a), ("b", successes_b, n_b)):
        if n <= 0 or not 0 <= s <= n:
            raise ValueError(
                f"arm {name}: successes={s} and trials={n} need 0 <= successes <= n > 0"
            )
    pa, pb = successes_a / n_a, successes_b / n_b
    se_a, se_b = np.sqrt(pa * (1 - pa) / n_a), np.sqrt(pb * (1 - pb) / n_b)
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se_pooled = float(np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b)))
    return Estimate(
        pa, pb, float(se_a), float(se_b), float(np.hypot(se_a, se_b)), se_null=se_pooled
    )


def proportion_samples(a: np.ndarray, b: np.ndarray) -> Estimate:
    _check_binary(a, "a")
    _check_binary(b, "b")
    return two_proportion(int(a.sum()), a.size, int(b.sum()), b.size)


def ratio_delta(a, b) -> Estimate:
    """Ratio metric sum(num)/sum(den) per arm, standard error by the delta method.

    Each arm is an (n, 2) array of (numerator, denominator) per randomization unit, e.g.
    (total latency, requests) per user, so units with many requests are not over-counted.
    """
    out = []
    for name, x in (("a", a), ("b", b)):
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2:
            raise ValueError(
                f"metric='ratio' needs arm {name} as an (n >= 2, 2) array of "
                f"(numerator, denominator) per unit, got shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"arm {name} holds NaN/inf; drop or impute them before testing")
        y, x_ = arr[:, 0], arr[:, 1]
        if x_.mean() == 0:
            raise ValueError(f"arm {name}: denominators sum to 0, the ratio is undefined")
        n = arr.shape[0]
        r = y.mean() / x_.mean()
        cov = np.cov(y, x_, ddof=1)
        var = (cov[0, 0] - 2 * r * cov[0, 1] + r**2 * cov[1, 1]) / (n * x_.mean() ** 2)
        out.append((float(r), float(np.sqrt(max(var, 0.0))), n))
    (ra, sa, _), (rb, sb, _) = out
    return Estimate(ra, rb, sa, sb, float(np.hypot(sa, sb)))
