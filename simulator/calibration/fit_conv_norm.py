"""Fit batch norm's and convolution backward's figures on one chip's conv / batch-norm sweep.

Each case of the sweep (measure_conv_norm_sweep.py: F.batch_norm in training mode and
bias-free convolutions, forward and forward+backward, NCHW and channels last, fp32 and bf16)
runs once through the public torch API on kpt_sim (timing only); its recorded launches are
then priced again for each trial profile, and FITS's figures are fitted by least squares on
log(predicted / measured) against the profiler's kernel sum:
- batchnorm (kpt.sim._batch_norm_cost): a channel's block rate, a wave's fixed cost, the
  backward's work per element and channels-last kernels' share of HBM bandwidth, fp32's in
  [efficiency.batchnorm] (cuDNN's kernels), bf16's in [efficiency.batchnorm.bf16];
- conv's backward_work (kpt.sim._cost_composite.conv_backward_timing): the weight gradient's
  kernel time in forwards', per dtype, from forward+backward alone; and bf16's own
  nchw_passes (cuDNN's transposes around an NCHW bf16 convolution), from the forwards.
The figures are a block's rate and shares of a kernel's time or of HBM bandwidth, which the
H100 and the H200 share (the same SMs), so they go into h100-sxm.toml whichever chip's sweep
they come from; run derive_h200.py next. validate_conv_norm_sweep.py prices the sweeps on
the shipped profiles.

    python fit_conv_norm.py [--chip h100-sxm|h200] [--dry-run]   (needs kpt-adapter-sim)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from validate_conv_norm_sweep import PARTS, SWEEPS, priced_us, recorded  # noqa: E402

from kpt.sim import profile_from_dict  # noqa: E402

PROFILE_PATH = HERE.parent / "src/kpt/sim/profiles/h100-sxm.toml"
PROFILES = HERE.parent / "src/kpt/sim/profiles"
# TOML key: (start, lower bound, upper bound).
NORM_TERMS = {
    "memory_e_max": (0.5, 0.02, 1.0),
    "row_stream_gbps": (20.0, 0.5, 500.0),
    "block_us": (1.0, 0.0, 30.0),
    "backward_work": (2.0, 0.2, 10.0),
}
WGRAD_TERMS = {"backward_work": (2.0, 0.2, 10.0)}
# (sweep group, its cases' dtype, the efficiency table fitted, its terms, the parts fitted).
# Batch norm: fp32 runs cuDNN's kernels, bf16 PyTorch's own (torch gives cuDNN no bf16 batch
# norm). Convolutions: the forward is the catalogue's (fit.py) but for bf16's NCHW transposes
# (its 3x3 forwards ran 16-23 % under at fp32's nchw_passes); then the weight gradient's time
# in forwards', from forward+backward.
FITS = (
    ("batch norm", "fp32", ("batchnorm",), NORM_TERMS, PARTS),
    ("batch norm", "bf16", ("batchnorm", "bf16"), NORM_TERMS, PARTS),
    ("conv", "bf16", ("conv", "bf16"), {"nchw_passes": (2.0, 0.0, 20.0)}, PARTS[:1]),
    ("conv", "fp32", ("conv",), WGRAD_TERMS, PARTS[1:]),
    ("conv", "bf16", ("conv", "bf16"), WGRAD_TERMS, PARTS[1:]),
)
# Tables that take another's fitted values: cuDNN's fp16 convolutions were not measured.
TIED = {("conv", "bf16"): ("conv", "fp16")}
COMMENTS = {
    ("batchnorm",): "training mode, by channel (kpt.sim._batch_norm_cost)",
    ("batchnorm", "bf16"): "PyTorch's kernels: no cuDNN batch norm for bf16",
}


def recorded_by_kind(sweep: dict) -> dict[tuple[str, str], list[tuple[str, list[dict], float]]]:
    """Per (batch norm or conv, dtype), each case part's name, recorded launches and measured
    us."""
    import kpt.adapters.sim  # noqa: F401  (registers the kpt_sim device)

    out: dict[tuple[str, str], list] = {}
    for group, _, part, ops, measured in recorded(sweep):
        kind, dtype, _ = group.rsplit(" ", 2)
        out.setdefault((kind, dtype), []).append((part, ops, measured))
    return out


def table_at(data: dict, path: tuple[str, ...]) -> dict:
    """The efficiency table at `path` in a profile dict; a class without one starts from
    norm's (batchnorm's parent)."""
    norm = data["efficiency"]["norm"]
    table = data["efficiency"].setdefault(path[0], {k: v for k, v in norm.items()
                                                    if not isinstance(v, dict)})  # fmt: skip
    for name in path[1:]:
        table = table.setdefault(name, {})
    return table


def fit(data: dict, profile_name: str, path: tuple, terms: dict, items: list) -> dict:
    """The terms that best price `items` (least squares on log(predicted / measured)), set in
    `data` (the chip's profile dict)."""
    table = table_at(data, path)

    def residuals(x: np.ndarray) -> list[float]:
        table.update(zip(terms, (float(v) for v in x)))
        profile = profile_from_dict(profile_name, data)
        return [math.log(priced_us(ops, profile) / measured) for ops, measured in items]

    start, lower, upper = (np.array(column) for column in zip(*terms.values()))
    best = least_squares(residuals, start, bounds=(lower, upper), x_scale=start)
    fitted = {key: float(f"{value:.4g}") for key, value in zip(terms, best.x)}
    errors = np.abs(np.expm1(residuals(np.array(list(fitted.values())))))
    print(f"{'.'.join(path)}: {fitted}; {len(items)} cases, median |error| "
          f"{np.median(errors):.1%}, p90 {np.percentile(errors, 90):.1%}")  # fmt: skip
    return fitted


def write(text: str, path: tuple[str, ...], values: dict[str, float]) -> str:
    """h100-sxm.toml with `values` set in [efficiency.<path>]: each key's line replaced, or
    added at the table's end. A missing class table is added after norm's, with norm's
    figures; a missing dtype table after its class's."""
    heading = "[" + ".".join(("efficiency", *path)) + "]"
    chunks = text.split("\n\n")

    def find(start: str) -> int | None:
        return next((i for i, c in enumerate(chunks) if c.startswith(start)), None)

    at = find(heading)
    if at is None:
        parent = "[" + ".".join(("efficiency", *path[:-1])) + "]" if len(path) > 1 else None
        after = find(parent) if parent else find("[efficiency.norm]")
        figures = "" if parent else chunks[after].split("\n", 1)[1]  # norm's, under its heading
        at = after + 1
        comment = f"{heading}  # {COMMENTS[path]}: fit_conv_norm.py"
        chunks.insert(at, f"{comment}\n{figures}".rstrip("\n"))
    for key, value in values.items():
        line = re.compile(rf"^{key} = [0-9.e+-]+", re.M).search(chunks[at])
        if line:
            chunks[at] = chunks[at][: line.start()] + f"{key} = {value}" + chunks[at][line.end() :]
        else:
            chunks[at] += f"\n{key} = {value}"
    return "\n\n".join(chunks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chip", choices=sorted(SWEEPS), default="h100-sxm")
    ap.add_argument("--dry-run", action="store_true", help="print the fit; write nothing")
    args = ap.parse_args()
    sweep = HERE / SWEEPS[args.chip]
    if not sweep.exists():
        sys.exit(f"{sweep.name} is not on file: run measure_conv_norm_sweep.py on that chip")
    items = recorded_by_kind(json.loads(sweep.read_text()))
    data = copy.deepcopy(tomllib.loads((PROFILES / f"{args.chip}.toml").read_text()))
    text = PROFILE_PATH.read_text()
    for group, dtype, path, terms, parts in FITS:
        chosen = [(ops, us) for part, ops, us in items[(group, dtype)] if part in parts]
        fitted = fit(data, args.chip, path, terms, chosen)
        text = write(text, path, fitted)
        if path in TIED:
            text = write(text, TIED[path], fitted)
    if not args.dry_run:
        PROFILE_PATH.write_text(text)
        print(f"wrote {PROFILE_PATH.name} (run derive_h200.py next)")


if __name__ == "__main__":
    main()
