"""kpt's main job, run by README's first command (`python3 -m nox -s demo`).

1. `kpt devices`: what kpt-hal finds on this machine, the simulated devices included.
2. Train a small GPT-2-style model on `kpt_sim` on a two-profile simulated cluster
   (h100-sxm and mi300x), reporting loss, simulated step time per profile, wall time, the
   prediction against the step measured on a real H100, a Perfetto trace and a plot.
3. Compare two configurations of that model (fp32 against bf16 autocast) on kpt_sim with a
   kpt.abtest Experiment and print the verdict with its interval.

Each step says plainly when the package it needs is not installed, and the others still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path


def _banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 72 - len(title)), flush=True)


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def list_devices() -> None:
    _banner("kpt devices")
    if not _have("kpt.hal"):
        print("kpt-hal is not installed: skipping device discovery")
        return
    subprocess.run([sys.executable, "-m", "kpt.hal", "devices"], check=True)


def train_on_simulator(out: Path, steps: int) -> None:
    _banner("training a GPT-2-style model on kpt_sim")
    if not _have("kpt.adapters.sim"):
        print("kpt-adapter-sim is not installed: the simulated device is not available")
        return
    from kpt.adapters.sim import demo

    result = demo.main(["--out", str(out), "--steps", str(steps)])
    load_checkpoint_on_cpu(result)


def load_checkpoint_on_cpu(result: dict) -> None:
    """The checkpoint the training saved on kpt_sim, loaded on the CPU: the same eval loss."""
    import torch

    from kpt.adapters.sim import demo

    _banner("the checkpoint saved on kpt_sim, loaded on the CPU")
    model = demo.load_on_cpu(result["checkpoint"])
    with torch.no_grad():
        cpu_loss = demo.evaluate(model, demo.DEMO_CONFIG, "cpu")
    print(f"eval loss on kpt_sim {result['eval_loss']:.6f}, on the CPU from the checkpoint "
          f"{cpu_loss:.6f} (difference {abs(cpu_loss - result['eval_loss']):.2e})")  # fmt: skip


def compare_configurations(steps: int) -> None:
    _banner("A/B: fp32 against bf16 autocast on kpt_sim")
    if not (_have("kpt.abtest") and _have("kpt.adapters.sim")):
        print("kpt-abtest or kpt-adapter-sim is not installed: skipping the experiment")
        return
    from kpt.adapters.sim import demo

    demo.compare_precisions(steps=steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="trace and plot folder")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--ab-steps", type=int, default=40, help="measured steps per arm")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    list_devices()
    train_on_simulator(args.out, args.steps)
    compare_configurations(args.ab_steps)
    _banner(f"done in {time.perf_counter() - started:.1f} s of wall time; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
