"""compare(): one entry point that picks the right fixed-horizon test for a metric."""

from __future__ import annotations

import numpy as np

from kpt.abtest._bootstrap import bootstrap_with_replicates
from kpt.abtest._classical import (
    mann_whitney,
    paired_t,
    proportion_samples,
    ratio_delta,
    welch,
)
from kpt.abtest._cuped import cuped
from kpt.abtest._estimate import Estimate
from kpt.abtest._quantiles import order_stat_supported, quantiles_with_se
from kpt.abtest._resample import quantile_statistic
from kpt.abtest._result import Comparison, metric_label
from kpt.abtest._test_inversion import hodges_lehmann, permutation_shift
from kpt.abtest._validate import as_sample, check_alpha, check_paired, parse_quantile

MEAN_METHODS = ("welch", "permutation", "bootstrap", "bootstrap_percentile", "mann_whitney")
QUANTILE_METHODS = ("order_statistic", "bootstrap", "bootstrap_percentile", "mann_whitney")


def _from_estimate(est: Estimate, alpha: float) -> dict:
    rel, rel_ci = est.relative(alpha)
    return dict(
        estimate_a=est.est_a,
        estimate_b=est.est_b,
        effect=est.effect,
        ci=est.ci(alpha),
        p_value=est.p_value(),
        relative_effect=rel,
        relative_ci=rel_ci,
    )


def _from_bootstrap(a, b, statistic, alpha, method, paired, n_resamples, seed) -> dict:
    kind = "bca" if method == "bootstrap" else "percentile"
    res, boot_a, boot_b = bootstrap_with_replicates(
        a, b, statistic=statistic, n_resamples=n_resamples, alpha=alpha, method=kind,
        paired=paired, seed=seed,
    )  # fmt: skip
    est_a, est_b = float(statistic(a)), float(statistic(b))
    if est_a != 0 and np.all(boot_a != 0):
        rel = est_b / est_a - 1
        rel_ci = tuple(
            float(v) for v in np.quantile(boot_b / boot_a - 1, [alpha / 2, 1 - alpha / 2])
        )
    else:
        rel, rel_ci = float("nan"), (float("nan"), float("nan"))
    return dict(
        estimate_a=est_a, estimate_b=est_b, effect=res.estimate, ci=res.ci,
        p_value=res.p_value, relative_effect=rel, relative_ci=rel_ci,
        interval=f"bootstrap {'BCa' if kind == 'bca' else 'percentile'}",
    )  # fmt: skip


def _rank_shift(a, b, statistic, alpha) -> dict:
    """Mann-Whitney p with its own interval: the Hodges-Lehmann shift and Moses interval.

    estimate_a / estimate_b stay the requested statistic of each arm (descriptive); the effect
    is the shift the rank test is about, and the relative figures scale it by a's median.
    """
    if min(a.size, b.size) < 2:
        raise ValueError("method='mann_whitney' needs at least 2 values per arm")
    shift, ci = hodges_lehmann(a, b, alpha)
    scale = float(np.median(a))
    if scale != 0:
        rel, rel_ci = shift / abs(scale), (ci[0] / abs(scale), ci[1] / abs(scale))
    else:
        rel, rel_ci = float("nan"), (float("nan"), float("nan"))
    return dict(
        estimate_a=float(statistic(a)), estimate_b=float(statistic(b)), effect=shift, ci=ci,
        p_value=mann_whitney(a, b)[1], relative_effect=rel, relative_ci=rel_ci,
        interval="Moses (Mann-Whitney inversion)", effect_name="Hodges-Lehmann shift b - a",
    )  # fmt: skip


def _mean(a, b, alpha, paired, method, n_resamples, seed) -> dict:
    if method.startswith("bootstrap"):
        return _from_bootstrap(a, b, np.mean, alpha, method, paired, n_resamples, seed)
    if method == "mann_whitney":
        if paired:
            raise ValueError("method='mann_whitney' is for independent samples; use paired=False")
        return _rank_shift(a, b, np.mean, alpha)
    out = _from_estimate(paired_t(a, b) if paired else welch(a, b), alpha)
    out["interval"] = "paired t" if paired else "Welch t"
    if method == "permutation":
        out["p_value"], out["ci"] = permutation_shift(
            a, b, alpha=alpha, n_resamples=n_resamples, paired=paired, seed=seed
        )
        out["interval"] = "permutation (test inversion)"
        # The relative interval scales the permutation interval by a's mean (held fixed).
        scale = abs(float(a.mean()))
        if scale != 0:
            out["relative_ci"] = (out["ci"][0] / scale, out["ci"][1] / scale)
    return out


def _quantile(a, b, q, alpha, paired, method, n_resamples, seed) -> dict:
    if method.startswith("bootstrap"):
        return _from_bootstrap(
            a, b, quantile_statistic(q), alpha, method, paired, n_resamples, seed
        )
    if paired:
        raise ValueError(f"method={method!r} needs independent samples; paired quantiles use "
                         "method='bootstrap' or 'bootstrap_percentile'")  # fmt: skip
    if method == "mann_whitney":
        return _rank_shift(a, b, quantile_statistic(q), alpha)
    if not (order_stat_supported(a.size, q, alpha) and order_stat_supported(b.size, q, alpha)):
        raise ValueError(
            f"n = {a.size} / {b.size} is too small for order-statistic intervals at q={q:g}; "
            "use method='bootstrap_percentile' or collect more samples"
        )
    (ea,), (sa,) = quantiles_with_se(a, [q], alpha)
    (eb,), (sb,) = quantiles_with_se(b, [q], alpha)
    out = _from_estimate(
        Estimate(float(ea), float(eb), float(sa), float(sb), float(np.hypot(sa, sb))), alpha
    )
    out["interval"] = "order statistic"
    return out


def _resolve_method(method: str, q, metric, n_a: int, n_b: int, alpha: float, paired: bool) -> str:
    if metric == "proportion":
        allowed, auto = ("z",), "z"
    elif metric == "ratio":
        allowed, auto = ("delta",), "delta"
    elif q is None:
        allowed, auto = MEAN_METHODS, "welch"
    else:
        allowed = QUANTILE_METHODS
        large = order_stat_supported(min(n_a, n_b), q, alpha)
        auto = "order_statistic" if large and not paired else "bootstrap_percentile"
    if method == "auto":
        return auto
    if method not in allowed:
        raise ValueError(f"method={method!r} does not apply to metric={metric!r}; choose from "
                         f"{', '.join(('auto', *allowed))}")  # fmt: skip
    return method


def compare(
    a,
    b,
    metric="mean",
    *,
    alpha: float = 0.05,
    paired: bool = False,
    method: str = "auto",
    higher_is_better: bool = False,
    covariates=None,
    n_resamples: int = 10_000,
    seed=None,
) -> Comparison:
    """Compare arm b against arm a on a metric; effect and interval are for b - a.

    metric: "mean", "median", "p95", "p99", a quantile level in (0, 1), "proportion" (0/1
    outcomes) or "ratio" ((n, 2) arrays of numerator, denominator per unit).
    covariates: (x_a, x_b) pre-experiment values for CUPED (mean metric only).
    """
    alpha = check_alpha(alpha)
    q = parse_quantile(metric)
    if q is None and metric not in ("mean", "proportion", "ratio"):
        raise ValueError(f"metric={metric!r} is unknown; use 'mean', 'median', 'p95', 'p99', "
                         "a quantile in (0, 1), 'proportion' or 'ratio'")  # fmt: skip
    if metric == "ratio":
        if paired:
            raise ValueError("metric='ratio' supports independent arms only; use paired=False")
        n_a, n_b = len(a), len(b)
        out = _from_estimate(ratio_delta(a, b), alpha)
        out["interval"] = "delta method"
        method = _resolve_method(method, q, metric, n_a, n_b, alpha, paired)
    else:
        a, b = as_sample(a, "a"), as_sample(b, "b")
        if paired:
            check_paired(a, b)
        n_a, n_b = a.size, b.size
        if covariates is not None:
            if metric != "mean":
                raise ValueError(f"covariates (CUPED) apply to metric='mean', not {metric!r}")
            a, b, _ = cuped(a, b, *covariates)
        method = _resolve_method(method, q, metric, n_a, n_b, alpha, paired)
        if metric == "proportion":
            out = _from_estimate(proportion_samples(a, b), alpha)
            out["interval"] = "normal (unpooled z)"
        elif q is None:
            out = _mean(a, b, alpha, paired, method, n_resamples, seed)
        else:
            out = _quantile(a, b, q, alpha, paired, method, n_resamples, seed)
        if covariates is not None:
            method = f"cuped+{method}"
            out["interval"] = f"{out['interval']} on CUPED-adjusted values"
    if paired and method in ("welch",):
        method = "paired_t"
    sign = np.sign(out["effect"])
    significant = out["p_value"] < alpha and sign != 0
    if not significant:
        decision = "no_difference"
    elif (sign > 0) == higher_is_better:
        decision = "b_better"
    else:
        decision = "a_better"
    return Comparison(
        metric=metric_label(metric), method=method, alpha=alpha, decision=decision,
        n_a=int(n_a), n_b=int(n_b), higher_is_better=higher_is_better, **out,
    )  # fmt: skip
