"""Convolutions and batch norm of a training step on a GPU, each kernel by name, forward and
forward+backward: what cuDNN runs where kpt_sim launches one op.

simulator/REPORT.md's CNN step (whole_steps.py's ResNet-10) ran 229 kernels for kpt_sim's 100
launches: cuDNN's batch norm (its own `bn_fw_tr` / `bn_bw` kernels), the data and weight
gradients of each convolution, and NCHW <-> NHWC transposes around them. The kernel catalogue
(measure_h100.py) timed convolution forwards and no batch norm. This sweep times, on the ResNet
shapes (CIFAR widths 64-512 at 32x32-4x4 pixels, an ImageNet stage or two) and batches 32-256:

- batch norm (F.batch_norm, training): the forward alone and forward+backward;
- convolutions (3x3 stride 1 and 2, the 1x1 stride-2 shortcut, the 3-channel stem): the forward
  alone and forward+backward (data and weight gradients; the stem's data gradient is not
  asked for, as in a training step);

in fp32 (cuDNN's default TF32) and bf16, NCHW and channels last. Each case is the median over
REPS calls of the profiler's kernel time, each kernel by name, L2 flushed before every call
(measure_fused_sweep.profile_calls). Torch only.

Usage (device machine): python3 measure_conv_norm_sweep.py --out "$OUT"
Smoke test on a CPU:    python3 measure_conv_norm_sweep.py --out /tmp/x --smoke
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from measure_fused_sweep import REPS, profile_calls
from measure_h100 import sweep_main

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = ("nchw", "channels_last")
# (channels, pixels per side): ResNet's CIFAR stages, then ImageNet's first and last.
NORM_SHAPES = ((64, 32), (128, 16), (256, 8), (512, 4), (64, 56), (512, 7))
BATCHES = (32, 128, 256)
# (in channels, out channels, pixels per side of the input, window, stride).
CONV_SHAPES = (
    (3, 64, 32, 3, 1), (64, 64, 32, 3, 1), (64, 128, 32, 3, 2), (64, 128, 32, 1, 2),
    (128, 128, 16, 3, 1), (128, 256, 16, 3, 2), (256, 256, 8, 3, 1), (256, 512, 8, 3, 2),
    (512, 512, 4, 3, 1), (64, 64, 56, 3, 1),
)  # fmt: skip
CONV_BATCHES = (32, 128)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


def norm_calls(batch: int, channels: int, side: int, dtype: str, layout: str, dev: str):
    """(forward, forward+backward) of one training-mode batch norm, its affine weights fp32 as
    nn.BatchNorm2d's stay under autocast."""
    x = _layout(torch.randn(batch, channels, side, side, device=dev, dtype=DTYPES[dtype]), layout)
    x.requires_grad_(True)
    weight = torch.ones(channels, device=dev, requires_grad=True)
    bias = torch.zeros(channels, device=dev, requires_grad=True)
    mean, var = torch.zeros(channels, device=dev), torch.ones(channels, device=dev)
    grad = torch.randn_like(x)

    def forward():
        return F.batch_norm(x, mean, var, weight, bias, training=True)

    def forward_backward():
        forward().backward(grad)

    return forward, forward_backward


def conv_calls(batch: int, shape: tuple, dtype: str, layout: str, dev: str):
    """(forward, forward+backward) of one bias-free convolution; the 3-channel stem's input
    asks for no gradient, as a network's first layer."""
    cin, cout, side, window, stride = shape
    kind = DTYPES[dtype]
    x = _layout(torch.randn(batch, cin, side, side, device=dev, dtype=kind), layout)
    x.requires_grad_(cin > 3)
    w = _layout(torch.randn(cout, cin, window, window, device=dev, dtype=kind), layout)
    w.requires_grad_(True)
    grad = _layout(torch.randn_like(F.conv2d(x.detach(), w.detach(), None, stride, window // 2)),
                   layout)  # fmt: skip

    def forward():
        return F.conv2d(x, w, None, stride, window // 2)

    def forward_backward():
        forward().backward(grad)

    return forward, forward_backward


def norm_cases(smoke: bool):
    if smoke:
        return [(2, 4, 4, "fp32", "nchw"), (2, 4, 4, "bf16", "channels_last")]
    return [(b, c, s, dt, lay) for b, (c, s), dt, lay
            in itertools.product(BATCHES, NORM_SHAPES, DTYPES, LAYOUTS)]  # fmt: skip


def conv_cases(smoke: bool):
    if smoke:
        return [(2, (3, 4, 8, 3, 1), "fp32", "nchw"), (2, (4, 8, 8, 3, 2), "bf16", "nchw")]
    return list(itertools.product(CONV_BATCHES, CONV_SHAPES, DTYPES, LAYOUTS))


def measure(smoke: bool, dev: str) -> dict:
    flush = torch.empty(64 << 20, dtype=torch.float32, device=dev)  # 256 MB > L2
    cuda = dev.startswith("cuda")
    norms, convs = [], []
    for batch, channels, side, dtype, layout in norm_cases(smoke):
        fwd, fwd_bwd = norm_calls(batch, channels, side, dtype, layout, dev)
        norms.append({"batch": batch, "channels": channels, "side": side, "dtype": dtype,
                      "layout": layout, "forward": profile_calls(fwd, flush, cuda),
                      "forward_backward": profile_calls(fwd_bwd, flush, cuda)})  # fmt: skip
        print("norm", (batch, channels, side, dtype, layout),
              norms[-1]["forward"].get("device_us"),
              norms[-1]["forward_backward"].get("device_us"), flush=True)  # fmt: skip
    for batch, shape, dtype, layout in conv_cases(smoke):
        fwd, fwd_bwd = conv_calls(batch, shape, dtype, layout, dev)
        cin, cout, side, window, stride = shape
        convs.append({"batch": batch, "in": cin, "out": cout, "side": side, "window": window,
                      "stride": stride, "dtype": dtype, "layout": layout,
                      "forward": profile_calls(fwd, flush, cuda),
                      "forward_backward": profile_calls(fwd_bwd, flush, cuda)})  # fmt: skip
        print("conv", (batch, shape, dtype, layout), convs[-1]["forward"].get("device_us"),
              convs[-1]["forward_backward"].get("device_us"), flush=True)  # fmt: skip
    return {"reps": REPS, "tf32": torch.backends.cudnn.allow_tf32,
            "batch_norm": norms, "conv": convs}  # fmt: skip


def main() -> None:
    sweep_main(__doc__, "{chip}_conv_norm_sweep.json", measure)


if __name__ == "__main__":
    main()
