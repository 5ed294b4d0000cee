"""Prediction intervals from a profile's calibration residuals (its [uncertainty] table).

A band per op class holds the 10th-90th percentile of measured/predicted on kernels the fit
never saw, so a kernel's interval is its prediction times that band. A step's interval adds
each class's band over the device time that class took, errors within a class taken as fully
correlated (one kernel library's bias moves all its kernels together): wide, not optimistic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from kpt.sim._cost import op_timing
from kpt.sim._op_cost import OpCost, normalize_class
from kpt.sim._profiles import Profile, load_profile

NO_BAND = (1.0, 1.0)  # an uncalibrated profile: no residuals, so no stated uncertainty


class Interval(NamedTuple):
    low: float
    predicted: float
    high: float


def band(profile: Profile, op_class: str) -> tuple[float, float]:
    """(low, high) factors for one op class: its own, else the profile's default, else 1."""
    bands = profile.uncertainty
    return bands.get(normalize_class(op_class)) or bands.get("default") or NO_BAND


def interval(profile: str | Profile, cost: OpCost) -> Interval:
    """A kernel's predicted seconds on `profile` with its class's calibration interval."""
    profile = load_profile(profile)
    predicted = op_timing(profile, *cost).duration
    low, high = band(profile, cost.op_class)
    return Interval(predicted * low, predicted, predicted * high)


def step_interval(profile: Profile, predicted: float, busy_by_class: Mapping[str, float]):
    """A step's interval: each class's busy seconds widened by its band (module doc)."""
    below = above = 0.0
    for op_class, busy in busy_by_class.items():
        low, high = band(profile, op_class)
        below += busy * (1.0 - low)
        above += busy * (high - 1.0)
    return Interval(max(0.0, predicted - below), predicted, predicted + above)
