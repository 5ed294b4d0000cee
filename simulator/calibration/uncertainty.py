"""Write the h100-sxm profile's [uncertainty] table from its calibration residuals.

For each of the engine's op classes, the measured/predicted ratios of the held-out kernels
(h100_dataset.json "validation": never fitted on) give a band [10th, 90th percentile], widened
to include 1: `kpt.sim.interval` multiplies a prediction by it, so about 80% of kernels of that
class land inside. Classes with fewer than MIN_ITEMS held-out kernels take the band of all
classes together. Re-run after fit.py; then re-derive h200 (README, "Profiles").

Usage: python uncertainty.py [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kpt.sim import load_profile
from kpt.sim._derive import _TomlLines

HERE = Path(__file__).parent
PROFILE_PATH = HERE.parent / "src/kpt/sim/profiles/h100-sxm.toml"
MIN_ITEMS = 8
LOW_Q, HIGH_Q = 0.10, 0.90


def ratios_by_class(profile, items: list[dict]) -> dict[str, list[float]]:
    from fit_dataset import predict  # this folder's: the cost model's inputs per kernel

    out: dict[str, list[float]] = {}
    for item in items:
        if item["kind"] != "op":
            continue
        out.setdefault(item["engine_class"], []).append(item["measured_s"] / predict(profile, item))
    return out


def band(values: list[float]) -> tuple[float, float]:
    lo, hi = np.quantile(values, [LOW_Q, HIGH_Q])
    return round(min(float(lo), 1.0), 4), round(max(float(hi), 1.0), 4)


def bands(profile, items: list[dict]) -> dict[str, tuple[float, float]]:
    ratios = ratios_by_class(profile, items)
    everything = [r for rs in ratios.values() for r in rs]
    out = {"default": band(everything)}
    for cls, rs in sorted(ratios.items()):
        out[cls] = band(rs) if len(rs) >= MIN_ITEMS else out["default"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    data = json.loads((HERE / "h100_dataset.json").read_text())
    result = bands(load_profile(str(PROFILE_PATH)), data["validation"])
    for cls, (lo, hi) in result.items():
        print(f"{cls:12s} [{lo:.3f}, {hi:.3f}]")
    if not args.dry_run:
        toml = _TomlLines(PROFILE_PATH.read_text())
        for cls, (lo, hi) in result.items():
            toml.set("uncertainty", cls, f"[{lo}, {hi}]")
        PROFILE_PATH.write_text(toml.text())


if __name__ == "__main__":
    main()
