"""GRU and Elman RNN layers (cuDNN) on a GPU, over the LSTM sweep's grid: the `rnn` class held out.

kpt_sim runs nn.GRU and nn.RNN as one fused launch per layer each way, priced by the `rnn` class
with the cell's gates (GRU 3, Elman 1), which was built for LSTM layers (4). REPORT.md times one
layer of each; this sweep gives the class more shapes it was never fitted on: one layer, the
grid of sequence, batch and width of measure_fused_sweep.py's LSTM layers, forward alone and
forward+backward, each profiled over REPS calls with L2 flushed (the kernels' summed device
time, and each kernel by name); and bidirectional GRU layers at sequence 64 (the class runs the
two directions in series, which cuDNN may not). Torch only. `fit_fused_sweep.py` reports it.

Usage (device machine): python3 measure_rnn_sweep.py --out "$OUT"
Smoke test on a CPU:    python3 measure_rnn_sweep.py --out /tmp/x --smoke
"""

from __future__ import annotations

from measure_fused_sweep import lstm_configs, profile_cases
from measure_h100 import sweep_main
from measure_h200_steps import rnn_calls

MODES = ("GRU", "RNN_TANH")


def cases(smoke: bool, dev: str) -> list:
    layers = [(mode, *shape, False) for mode in MODES for shape in lstm_configs(smoke)]
    layers += [("GRU", *shape, True) for shape in lstm_configs(smoke) if smoke or shape[0] == 64]
    out = []
    for mode, seq, batch, inp, hidden, bidirectional in layers:
        fields = {"mode": mode, "seq": seq, "batch": batch, "input": inp, "hidden": hidden,
                  "bidirectional": bidirectional}  # fmt: skip
        calls = rnn_calls(mode, seq, batch, inp, hidden, 1, dev, bidirectional)
        for part, call in zip(("forward", "forward_backward"), calls):
            out.append(({**fields, "part": part}, lambda call=call: call))
    return out


def main() -> None:
    sweep_main(__doc__, "{chip}_rnn_sweep.json",
               lambda smoke, dev: {"rnn": profile_cases(cases(smoke, dev), dev)})  # fmt: skip


if __name__ == "__main__":
    main()
