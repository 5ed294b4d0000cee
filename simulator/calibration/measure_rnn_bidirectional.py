"""Bidirectional cuDNN RNN layers (LSTM, GRU; one and two layers) timed alone on the GPU.

kpt_sim runs a bidirectional layer's two directions in series (the `rnn` class); cuDNN may run
them side by side, as it runs a stack's layers (measure_rnn_stack_sweep.py). This sweep times
each shape one way and both ways, forward+backward and the forward alone under no_grad, each
profiled (the kernels' summed device time) and timed alone on the GPU (one call behind a 50 ms
hold: measure_h200_steps.gpu_alone). Torch only.

Usage (device machine): python3 measure_rnn_bidirectional.py --out "$OUT"
Smoke test on a CPU:    python3 measure_rnn_bidirectional.py --out /tmp/x --smoke
"""

from __future__ import annotations

from measure_h100 import sweep_main
from measure_rnn_stack_sweep import stacks

MODES = ("LSTM", "GRU")
SHAPES = [  # seq, batch, input, hidden
    (64, 32, 512, 512), (32, 8, 256, 256), (128, 64, 1024, 1024), (48, 16, 256, 768),
    (96, 24, 768, 384),
]  # fmt: skip


def main() -> None:
    sweep_main(__doc__, "{chip}_rnn_bidirectional.json",
               lambda smoke, dev: {"layers": stacks(smoke, dev, MODES, SHAPES,
                                                    ("forward_backward", "forward"), (1, 2),
                                                    (False, True))})  # fmt: skip


if __name__ == "__main__":
    main()
