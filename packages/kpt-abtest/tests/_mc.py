"""Monte-Carlo helpers shared by the validation tests."""

import numpy as np


def mc_bound(p: float, reps: int, sigmas: float = 3.0) -> float:
    """p plus `sigmas` Monte-Carlo standard errors of a proportion estimated from reps runs."""
    return p + sigmas * np.sqrt(p * (1 - p) / reps)


DISTRIBUTIONS = {
    "normal": lambda rng, size: rng.normal(10.0, 2.0, size),
    "lognormal": lambda rng, size: rng.lognormal(0.0, 1.0, size),
    # Pareto with shape 3: heavy right tail, finite variance (latency-like).
    "pareto": lambda rng, size: 1.0 + rng.pareto(3.0, size),
}
