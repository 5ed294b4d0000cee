"""What the one-class fits (fit_int8_gemm.py, fit_multi_tensor.py) share: a profile with one
op class's efficiency changed, as the engine will read it."""

from __future__ import annotations

import dataclasses

from kpt.sim._cost import _RATES


def with_efficiency(profile, op_class: str, **fields):
    """`profile` with `op_class`'s efficiency table (its own, else the one it falls back to)
    given `fields` (kpt.sim._profiles.Efficiency's names, SI units)."""
    table = dataclasses.replace(profile.efficiency_for(op_class), **fields)
    _RATES.clear()  # rates are cached per profile and class
    return dataclasses.replace(profile, efficiency={**profile.efficiency, op_class: table})
