"""Compare two configurations of a small torch model, fp32 against bf16 autocast, on one device.

    python examples/compare_configs.py                  # on the CPU
    python examples/compare_configs.py --device kpt_sim # on the simulator (kpt-adapter-sim)

Each trial is one forward+backward step, timed with device events where the device has them
(simulated milliseconds on kpt_sim), otherwise wall time. The arms run in ABBA order so drift
cancels, and a sequential test stops as soon as the difference is clear.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import kpt.abtest as ab


def _load_device(device: str):
    import torch

    if device.startswith("kpt_sim"):
        import kpt.adapters.sim  # noqa: F401 - registers the kpt_sim device with torch
    return torch.device(device)


def _model(torch, width: int):
    return torch.nn.Sequential(
        torch.nn.Linear(width, 4 * width),
        torch.nn.GELU(),
        torch.nn.Linear(4 * width, width),
        torch.nn.LayerNorm(width),
    )


def _autocast_works(torch, device, model, inputs) -> bool:
    """Whether bf16 autocast runs here; some out-of-tree backends register no autocast kernels."""
    try:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            model(inputs[:1])
        return True
    except (RuntimeError, NotImplementedError) as error:
        reason = str(error).splitlines()[0][:120]
        print(f"note: bf16 autocast is not available on {device} ({reason}); the bf16 arm "
              "runs a bfloat16 copy of the model on bfloat16 inputs instead")  # fmt: skip
        return False


def compare_configs(
    device: str = "cpu",
    *,
    steps: int = 40,
    width: int = 256,
    batch: int = 64,
    seed: int = 0,
) -> ab.ExperimentResult:
    """Run the experiment and return its result (the demo prints ``result.summary()``)."""
    import torch

    dev = _load_device(device)
    torch.manual_seed(seed)
    model = _model(torch, width).to(dev)
    inputs = torch.randn(batch, width, device=dev)
    if _autocast_works(torch, dev, model, inputs):
        bf16_model, bf16_inputs = model, inputs
        autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    else:
        torch.manual_seed(seed)
        bf16_model = _model(torch, width).to(dev, dtype=torch.bfloat16)
        bf16_inputs = inputs.to(torch.bfloat16)
        autocast = contextlib.nullcontext()

    def step(precision: str) -> None:
        if precision == "fp32":
            net, x, context = model, inputs, contextlib.nullcontext()
        else:
            net, x, context = bf16_model, bf16_inputs, autocast
        with context:
            loss = net(x).float().pow(2).mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    def trial(config: dict) -> dict[str, float]:
        seconds = ab.device_timer(dev, lambda: step(config["precision"]))
        return {"step_ms": 1000.0 * seconds}

    experiment = ab.Experiment(
        {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}},
        trial,
        metric="step_ms",
        warmup=3,
        max_trials=steps,
        min_trials=min(10, steps),
        schedule="abba",
        seed=seed,
    )
    return experiment.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, kpt_sim, ...")
    parser.add_argument("--steps", type=int, default=40, help="most measured steps per arm")
    parser.add_argument("--width", type=int, default=256, help="model width")
    parser.add_argument("--out", type=Path, help="folder for report.md, report.json and plots")
    args = parser.parse_args(argv)
    result = compare_configs(args.device, steps=args.steps, width=args.width)
    print(result.summary())
    if args.out:
        for name in ("report.md", "report.json"):
            print(f"wrote {ab.write_report(result, args.out / name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
