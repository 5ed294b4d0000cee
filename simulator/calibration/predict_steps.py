"""Whole training steps on kpt_sim against the H100: fit host_issue_us on one model.

Runs each host-bound reference step of host_steps.py (MLP, small CNN, demo GPT, GPT-2 small;
four optimizers) on the kpt_sim device, records one warm step's ops, and replays that trace
on the h100-sxm profile with a range of host_issue_us values (the engine charges it per
launch). host_issue_us is fitted on the MLP's steps only; the other models are predictions,
compared with the real walls in h100_host_steps_r2.json. Appends a table to HOST_STEPS.md,
writes h100_host_fit.json (tests/test_host_issue.py replays its traces) and sets the profile's
host_issue_us to the fitted value.

Usage: PYTHONPATH=../src python predict_steps.py [--dry-run]   (needs kpt-adapter-sim; CPU)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from pathlib import Path

import torch
from host_steps import HOST_STEP_RUNS, build, make_optimizer
from report_sections import write_section
from scipy.optimize import minimize_scalar

HERE = Path(__file__).parent
PROFILE = HERE.parent / "src/kpt/sim/profiles/h100-sxm.toml"
REAL = HERE / "h100_host_steps_r2.json"
OUT = HERE / "HOST_STEPS.md"
FIT_JSON = HERE / "h100_host_fit.json"
HEADING = "## Whole steps on kpt_sim"
FIT_MODEL = "mlp"


def record_step(model: str, optimizer: str, tmp: Path) -> dict:
    """One warm step's op trace on kpt_sim device 0."""
    from kpt.adapters.sim._runtime import runtime

    dev = torch.device("kpt_sim", 0)
    net, x, y, loss_fn = build(model, "cpu", smoke=False)
    net, x, y = net.to(dev), x.to(dev), y.to(dev)
    opt = make_optimizer(optimizer, net.parameters())

    def step():
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    step().item()  # warm: buffers cached, optimizer state built
    client = runtime().client
    client.record_ops(True)
    step()
    path = client.dump_ops(tmp / f"{model}-{optimizer}.json")
    client.record_ops(False)
    return json.loads(Path(path).read_text())


def profile_with_host(host_us: float, tmp: Path) -> str:
    text = re.sub(r"(?m)^host_issue_us = .*$", f"host_issue_us = {host_us:.4f}",
                  PROFILE.read_text())  # fmt: skip
    path = tmp / f"h100-host-{host_us:.4f}.toml"
    path.write_text(text)
    return str(path)


def predicted_s(trace: dict, host_us: float, tmp: Path) -> float:
    from kpt.sim import replay

    return replay(trace, profile=profile_with_host(host_us, tmp))["predicted_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("KPT_SIM_PROFILE", "h100-sxm:1")
    import kpt.adapters.sim  # noqa: F401  (registers the kpt_sim device)

    real = {(r["model"], r["optimizer"]): r for r in json.loads(REAL.read_text())["runs"]}
    tmp = Path(tempfile.mkdtemp(prefix="kpt-predict-steps-"))
    traces = {}
    for model, optimizer in HOST_STEP_RUNS:
        try:
            traces[(model, optimizer)] = record_step(model, optimizer, tmp)
        except Exception as exc:  # an op kpt_sim lacks: say which, keep the others
            print(f"{model} {optimizer}: not run on kpt_sim: {exc!r}"[:300])
    launches = {k: sum(1 for op in t["ops"] if op.get("op") == "launch") for k, t in traces.items()}

    def loss(log_h):
        h = math.exp(log_h)
        return sum(math.log(predicted_s(t, h, tmp) * 1e3 / real[k]["step_ms_median"]) ** 2
                   for k, t in traces.items() if k[0] == FIT_MODEL)  # fmt: skip

    fitted = math.exp(minimize_scalar(loss, bounds=(math.log(1.0), math.log(200.0)),
                                      method="bounded", options={"xatol": 1e-3}).x)  # fmt: skip
    # the value the round started from (isolated small ops), for the "before" column
    current = float(re.search(r"(?m)^host_issue_us = (\S+)",
                              (HERE / "h100-sxm-r1.toml").read_text()).group(1))  # fmt: skip
    lines = [
        HEADING,
        "",
        f"`predict_steps.py`: each step above run on kpt_sim, one warm step's ops replayed on "
        f"h100-sxm. host_issue_us fitted on the {FIT_MODEL} only: **{fitted:.1f} us per launch** "
        f"(the profile had {current} us, from isolated `x + x` loops on the first run's host).",
        "",
        f"| model | optimizer | kpt_sim launches | real wall | host {current} us | "
        f"host {fitted:.1f} us | fit/val |",
        "|---|---|---|---|---|---|---|",
    ]
    errs = []
    for k, t in traces.items():
        wall = real[k]["step_ms_median"]
        before = predicted_s(t, current, tmp) * 1e3
        after = predicted_s(t, fitted, tmp) * 1e3
        if k[0] != FIT_MODEL:
            errs.append(abs(after / wall - 1))
        lines.append(f"| {k[0]} | {k[1]} | {launches[k]} | {wall:.2f} ms | {before:.2f} ms "
                     f"({before / wall:.2f}x) | {after:.2f} ms ({after / wall:.2f}x) | "
                     f"{'fit' if k[0] == FIT_MODEL else 'val'} |")  # fmt: skip
    if errs:
        errs.sort()
        lines += ["", f"Validation steps: median |predicted / real - 1| "
                  f"{errs[len(errs) // 2]:.1%}, max {errs[-1]:.1%} over {len(errs)}."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"fitted_host_issue_us": fitted}))
    if not args.dry_run:
        FIT_JSON.write_text(json.dumps({
            "fitted_on": FIT_MODEL, "host_issue_us": round(fitted, 2),
            "steps": [{"model": k[0], "optimizer": k[1], "launches": launches[k],
                       "real_ms": real[k]["step_ms_median"],
                       "predicted_ms": predicted_s(t, fitted, tmp) * 1e3,
                       "trace": {"format": t["format"], "version": t["version"],
                                 "ops": t["ops"]}}
                      for k, t in traces.items()]}, indent=1))  # fmt: skip
        PROFILE.write_text(re.sub(r"(?m)^host_issue_us = \S+", f"host_issue_us = {fitted:.2f}",
                                  PROFILE.read_text()))  # fmt: skip
        write_section(OUT, HEADING, text)


if __name__ == "__main__":
    main()
