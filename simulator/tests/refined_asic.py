"""test-asic with extra efficiency tables, so each cost-model refinement can be computed by hand
(test_cost.py, test_cost_rows.py)."""

from __future__ import annotations

import tomllib
from importlib import resources

import kpt.sim

US = 1e-6  # test-asic's launch


def asic_with(**tables) -> kpt.sim.Profile:
    """test-asic (every efficiency 1, matrix 1 TFLOP/s, vector 0.5, HBM 100 GB/s, launch 1 us)
    with extra [efficiency.<class>] tables, so each refinement can be computed by hand."""
    data = tomllib.loads((resources.files("kpt.sim") / "profiles" / "test-asic.toml").read_text())
    exact = {"compute_e_max": 1.0, "compute_x_half": 0, "memory_e_max": 1.0, "memory_x_half": 0}
    for name, extra in tables.items():
        data["efficiency"][name] = {**exact, **extra}
    return kpt.sim.profile_from_dict("asic-refined", data)
