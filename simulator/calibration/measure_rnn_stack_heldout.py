"""Stacked cuDNN RNN layers of shapes the `[rnn]` table was not fitted on, timed alone on the GPU.

h100-sxm's `[rnn]` table (cuDNN's gap between a layer's kernels, what a layer above the first
adds) is fitted on measure_rnn_stack_sweep.py's stacks: square layers, forward+backward, LSTM
and GRU. This sweep checks it where it was not fitted: inputs wider or narrower than the hidden
state, other widths, batches and lengths, Elman (tanh) stacks, and each stack's forward alone
under no_grad (as a model serves), one to three layers. `fit_fused_sweep.py` reports kpt_sim
against it (nothing fitted on it). Torch only.

Usage (device machine): python3 measure_rnn_stack_heldout.py --out "$OUT"
Smoke test on a CPU:    python3 measure_rnn_stack_heldout.py --out /tmp/x --smoke
"""

from __future__ import annotations

from measure_h100 import sweep_main
from measure_rnn_stack_sweep import stacks

MODES = ("LSTM", "GRU", "RNN_TANH")
SHAPES = [  # seq, batch, input, hidden: none of the fitted sweep's
    (48, 16, 256, 768), (96, 24, 768, 384), (32, 128, 512, 512), (24, 4, 1024, 640),
]  # fmt: skip


def main() -> None:
    sweep_main(__doc__, "{chip}_rnn_stack_heldout.json",
               lambda smoke, dev: {"stacks": stacks(smoke, dev, MODES, SHAPES,
                                                    ("forward_backward", "forward"))})  # fmt: skip


if __name__ == "__main__":
    main()
