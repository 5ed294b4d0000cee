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

import torch
from measure_h100 import sweep_main
from measure_h200_steps import gpu_alone, kernel_profile, rnn_calls

MODES = ("LSTM", "GRU")
LAYERS = (1, 2)
SHAPES = [  # seq, batch, input, hidden
    (64, 32, 512, 512), (32, 8, 256, 256), (128, 64, 1024, 1024), (48, 16, 256, 768),
    (96, 24, 768, 384),
]  # fmt: skip


def layers(smoke: bool, dev: str) -> list[dict]:
    out = []
    for mode in MODES:
        for seq, batch, inp, hidden in [(4, 2, 8, 8)] if smoke else SHAPES:
            for depth in LAYERS:
                for both in (False, True):
                    fwd, fwd_bwd = rnn_calls(mode, seq, batch, inp, hidden, depth, dev, both)
                    for part, fn in (("forward_backward", fwd_bwd),
                                     ("forward", torch.no_grad()(fwd))):  # fmt: skip
                        out.append({"mode": mode, "seq": seq, "batch": batch, "input": inp,
                                    "hidden": hidden, "layers": depth, "bidirectional": both,
                                    "part": part, "kernels": kernel_profile(fn, dev),
                                    "gpu_alone": gpu_alone(fn, dev)})  # fmt: skip
                        print({k: v for k, v in out[-1].items() if k != "kernels"}, flush=True)
    return out


def main() -> None:
    sweep_main(__doc__, "{chip}_rnn_bidirectional.json",
               lambda smoke, dev: {"layers": layers(smoke, dev)})  # fmt: skip


if __name__ == "__main__":
    main()
