"""Stacked cuDNN RNN layers (LSTM, GRU; one to three layers) timed alone on the GPU.

cuDNN runs a multi-layer RNN's layers as a wavefront on several streams: layer 2's step t
beside layer 1's step t+1, so a stack takes less than its layers' kernels in series (REPORT.md's
"Fused kernels alone on the GPU": a two-layer LSTM under its kernel sum, a one-layer one 17-44 %
over it, the gaps between its kernels). kpt_sim runs each layer as its own launch, in series.
This sweep gives that overlap its shapes: forward+backward of stacks of one, two and three
layers, each profiled (the kernels' summed device time, each kernel by name) and timed alone on
the GPU (one call behind a 50 ms hold, CUDA events: measure_h200_steps.gpu_alone). Torch only.

Usage (device machine): python3 measure_rnn_stack_sweep.py --out "$OUT"
Smoke test on a CPU:    python3 measure_rnn_stack_sweep.py --out /tmp/x --smoke
"""

from __future__ import annotations

import torch
from measure_h100 import sweep_main
from measure_h200_steps import gpu_alone, kernel_profile, rnn_calls

MODES = ("LSTM", "GRU")
LAYERS = (1, 2, 3)
SHAPES = [  # seq, batch, input, hidden
    (64, 32, 512, 512), (32, 8, 256, 256), (128, 64, 1024, 1024), (64, 64, 512, 512),
    (16, 32, 512, 512),
]  # fmt: skip


def stacks(smoke: bool, dev: str, modes=MODES, shapes=SHAPES, parts=("forward_backward",),
           depths=LAYERS, ways=(False,)) -> list[dict]:  # fmt: skip
    """Each stack of `modes` x `shapes` x `depths` x `ways` (bidirectional or not), each part
    ("forward_backward"; "forward": the forward under no_grad, as a model serves) profiled and
    timed alone on the GPU."""
    out = []
    for mode in modes:
        for seq, batch, inp, hidden in [(4, 2, 8, 8)] if smoke else shapes:
            for layers in depths:
                for both in ways:
                    fwd, fwd_bwd = rnn_calls(mode, seq, batch, inp, hidden, layers, dev, both)
                    for part in parts:
                        fn = fwd_bwd if part == "forward_backward" else torch.no_grad()(fwd)
                        out.append({"mode": mode, "seq": seq, "batch": batch, "input": inp,
                                    "hidden": hidden, "layers": layers, "bidirectional": both,
                                    "part": part, "kernels": kernel_profile(fn, dev),
                                    "gpu_alone": gpu_alone(fn, dev)})  # fmt: skip
                        print({k: v for k, v in out[-1].items() if k != "kernels"}, flush=True)
    return out


def main() -> None:
    sweep_main(__doc__, "{chip}_rnn_stack_sweep.json",
               lambda smoke, dev: {"stacks": stacks(smoke, dev)})  # fmt: skip


if __name__ == "__main__":
    main()
