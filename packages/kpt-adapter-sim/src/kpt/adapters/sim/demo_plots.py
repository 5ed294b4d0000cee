"""The demo's figures: the training run, and simulated chip-busy time beside a real GPU's.

matplotlib is optional (the ``demo`` extra): without it each function says so and returns None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BusyBar:
    """One chip and precision: the simulator's figures and the real GPU's (None: not measured)."""

    label: str  # e.g. "H100 fp32"
    simulated_busy_ms: float
    simulated_step_ms: float
    measured_busy_ms: float | None
    measured_step_ms: float | None


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install 'kpt-adapter-sim[demo]')")
        return None
    return plt


def plot_training(path: Path, losses: Sequence[tuple[int, float]], steps: dict) -> Path | None:
    """Loss curve, and the simulated step time of each device split into chip-busy and waiting.

    ``steps``: device label -> (simulated step ms, chip-busy ms)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        left.plot(*zip(*losses))
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.set_title("training on kpt_sim")
    labels = list(steps)
    busy = [steps[k][1] for k in labels]
    rest = [steps[k][0] - steps[k][1] for k in labels]
    right.bar(labels, busy, label="chip busy")
    right.bar(labels, rest, bottom=busy, label="chip idle (waiting for the host)")
    right.set_ylabel("simulated ms per step")
    right.set_title("one training step per device")
    right.set_ylim(0, 1.3 * max([b + r for b, r in zip(busy, rest)], default=1.0))
    right.legend(loc="upper center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_chip_busy(path: Path, bars: Sequence[BusyBar]) -> Path | None:
    """Simulated chip-busy time beside the real GPU-busy time (left), and the steps (right)."""
    plt = _pyplot()
    if plt is None or not bars:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = list(range(len(bars)))
    width = 0.4
    panels = (
        (axes[0], "simulated_busy_ms", "measured_busy_ms", "chip busy per step (ms)",
         "kpt_sim chip busy", "real GPU busy (sum of kernel times)"),
        (axes[1], "simulated_step_ms", "measured_step_ms", "step time (ms)",
         "kpt_sim step", "real GPU step (wall)"),
    )  # fmt: skip
    for ax, simulated, measured, ylabel, sim_label, real_label in panels:
        ax.bar([i - width / 2 for i in x], [getattr(b, simulated) for b in bars], width,
               label=sim_label)  # fmt: skip
        real = [getattr(b, measured) for b in bars]
        ax.bar([i + width / 2 for i, v in zip(x, real) if v is not None],
               [v for v in real if v is not None], width, label=real_label)  # fmt: skip
        ax.set_xticks(x, [b.label for b in bars])
        ax.set_ylabel(ylabel)
        tallest = max([getattr(b, simulated) for b in bars] + [v for v in real if v is not None])
        ax.set_ylim(0, 1.3 * tallest)  # room for the legend above the bars
        ax.legend(fontsize=8, loc="upper center", ncols=2)
    axes[0].set_title("the chip's own work: simulated vs measured")
    axes[1].set_title("whole step: host issuing included")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
