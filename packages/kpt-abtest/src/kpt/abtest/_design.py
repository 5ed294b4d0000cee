"""A truncated sequential design: the smallest average sample size at the planned effect.

The open-ended mixture boundary (_sequential.py) never stops looking, so it pays ~1.1x the
fixed-horizon n at the planned effect. When the planned fixed-horizon n is known, a design
with a maximum n does much better, as group-sequential designs do, while still allowing a
look after every observation. On the B-value scale S(t) = z(t) sqrt(t), t = n / max_n in
(0, 1], the test rejects when |S(t)| >= a + b t: a truncated two-sided SPRT (Wald's boundary
is such a line). For Brownian motion the chance of ever crossing a line by t = 1 is closed
form (Siegmund 1986, eq. 3.15):

    P(sup_{t<=1} W(t) - (a + c t) >= 0) = 1 - Phi(a + c) + exp(-2 a c) Phi(c - a)

so size (both sides, union bound: conservative), power at the planned effect (drift
theta = (z_{1-alpha/2} + z_{power}) sqrt(max_n / plan_n)) and E[min(stop, max_n)] are exact
for continuous monitoring; any coarser look schedule only lowers the false-positive rate.
(a, b, max_n / plan_n) minimize the expected n at the planned effect subject to size <=
alpha and power >= the planned power. The design depends on alpha, power and the planned
look spacing only, so it is computed once (~0.3 s) and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats

_T_GRID = np.linspace(1e-4, 1.0, 600)


def _crossing(a, c, t=1.0):
    """P(W crosses a + c s for some s <= t), W standard Brownian motion; arrays broadcast."""
    a, c, t = np.asarray(a, float), np.asarray(c, float), np.asarray(t, float)
    root = np.sqrt(t)
    direct = special.ndtr(-(a + c * t) / root)
    # exp(-2ac) Phi(.) in log space: the exponent is large when the drift beats the slope.
    reflected = np.exp(np.minimum(-2 * a * c + special.log_ndtr((c * t - a) / root), 0.0))
    return np.clip(direct + reflected, 0.0, 1.0)


def _size_intercepts(slopes: np.ndarray, alpha: float) -> np.ndarray:
    """For each slope b, the intercept a with two-sided size exactly alpha (bisection)."""
    lo, hi = np.zeros_like(slopes), np.full_like(slopes, 10.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        too_big = 2 * _crossing(mid, slopes) > alpha
        lo, hi = np.where(too_big, mid, lo), np.where(too_big, hi, mid)
    return hi


def _expected_time(a, c) -> np.ndarray:
    """E[min(first crossing of a + c s, 1)]: the integral of the survival function."""
    survive = 1.0 - _crossing(a[..., None], c[..., None], _T_GRID)
    return np.trapezoid(survive, _T_GRID, axis=-1) + _T_GRID[0]


@dataclass(frozen=True)
class TruncatedDesign:
    """|S(t)| >= a + b t, t = n / (max_ratio * plan_n); see the module docstring."""

    alpha: float
    power: float
    a: float
    b: float
    max_ratio: float  # max_n / plan_n
    look_shift: float = 0.0  # boundary offset that models the planned look spacing

    def z_boundary(self, t):
        """The |z| a look at information fraction t in (0, 1] must reach to stop."""
        t = np.minimum(np.asarray(t, dtype=np.float64), 1.0)
        return (self.a + self.b * t) / np.sqrt(t)

    def drift(self, effect_ratio: float = 1.0) -> float:
        """B-value drift at t = 1 for an effect `effect_ratio` times the planned one."""
        z_sum = stats.norm.ppf(1 - self.alpha / 2) + stats.norm.ppf(self.power)
        return float(effect_ratio * z_sum * np.sqrt(self.max_ratio))

    def expected_n_ratio(self, effect_ratio: float = 1.0) -> float:
        """E[n] / plan_n under continuous monitoring, for an effect effect_ratio x planned."""
        c = np.array(self.b - self.drift(effect_ratio))
        return float(self.max_ratio * _expected_time(np.array(self.a + self.look_shift), c))

    def power_at(self, effect_ratio: float = 1.0) -> float:
        """P(reject in the effect's direction) at the planned look spacing."""
        return float(_crossing(self.a + self.look_shift, self.b - self.drift(effect_ratio)))


# Siegmund's correction: looking every d units of information (t scale) behaves like looking
# continuously at a boundary 0.583 sqrt(d) further out. Used for power and expected n only;
# size stays computed for continuous looks, so looking more often than planned is still safe.
_DISCRETE_SHIFT = 0.583


@lru_cache(maxsize=64)
def truncated_design(alpha: float, power: float, look_ratio: float = 0.0) -> TruncatedDesign:
    """The (a, b, max_n / plan_n) with the least expected n at the planned effect.

    look_ratio: planned per-arm batch between looks over plan_n (0: after every observation);
    the design keeps its power when looks come that far apart.
    """
    z_sum = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    ratios = np.linspace(1.0, 2.5, 61)[:, None]
    theta = z_sum * np.sqrt(ratios)
    slopes = np.linspace(0.0, 1.0, 81)[None, :] * theta
    intercepts = _size_intercepts(slopes.reshape(-1), alpha).reshape(slopes.shape)
    effective = intercepts + _DISCRETE_SHIFT * np.sqrt(look_ratio / ratios)
    c = slopes - theta
    powered = _crossing(effective, c) >= power
    asn = np.where(powered, ratios * _expected_time(effective, c), np.inf)
    i, j = np.unravel_index(np.argmin(asn), asn.shape)
    if not np.isfinite(asn[i, j]):
        raise ValueError(f"no truncated design reaches power={power} at alpha={alpha}")
    return TruncatedDesign(
        alpha, power, float(intercepts[i, j]), float(slopes[i, j]), float(ratios[i, 0]),
        float(effective[i, j] - intercepts[i, j]),
    )  # fmt: skip
