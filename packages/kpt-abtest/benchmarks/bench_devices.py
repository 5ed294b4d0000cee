"""Cross-hardware benchmark: one torch training step on every device kpt-hal finds.

    python benchmarks/bench_devices.py [--trials 30] [--json OUT.json]

Prints each device's median step time and its speed relative to the first device (the CPU
baseline, measured in the same run) with a 95% interval, and the cost per million steps at
list prices per device-hour. Needs torch and kpt-hal (`pip install kpt-abtest[torch] kpt-hal`).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import kpt.abtest as ab

# Indicative on-demand prices per device-hour (USD), for cost-performance only.
PRICES = {"cpu": 0.10, "cuda:0": 2.50, "kpt_sim:0": 0.0}


def mlp_step(device: torch.device | str):
    """Set up a 4-layer MLP on `device`; return one timed training step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(1024, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 2048),
        torch.nn.GELU(), torch.nn.Linear(2048, 1024),
    ).to(device)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(256, 1024, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--json", help="also write the result as JSON here")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    prices = {d: PRICES[d] for d in devices}
    result = ab.benchmark_devices(mlp_step, devices, prices=prices, trials=args.trials)
    print(result.summary() if hasattr(result, "summary") else result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_dict(), f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
