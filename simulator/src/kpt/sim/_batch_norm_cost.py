"""Training-mode batch norm as the GPU libraries run it, which no roofline describes.

A batch norm's statistics reduce each channel over the batch and the pixels. In NCHW the
channel's elements lie in N separate runs, and both cuDNN (fp32, fp16:
`bn_fw_tr_1C11_kernel_NCHW`, `bn_bw_1C11_kernel_new`) and PyTorch's own kernels (bf16:
`batch_norm_collect_statistics_kernel`, `batch_norm_backward_kernel`) give each channel one
thread block, which streams the channel at a block's rate: a layer of 64 channels keeps 64
of the chip's SMs busy, and more channels than SMs run in waves. An H200 took 74 us for the
forward of a 128 x 64 x 32 x 32 fp32 batch (0.56 ns an element of a channel) and 196 us for
its backward, against 15 us to stream those bytes at full bandwidth
(calibration/h200_conv_norm_sweep.json). Channels last, the kernels spread every channel over
the whole chip (cuDNN's `batchnorm_fwtr_nhwc_semiPersist`, PyTorch's `*_channels_last_*`):
those stream the op's bytes at the class's memory efficiency.

Shape: (channels, elements per channel, channels_last 0 or 1, backward 0 or 1).
"""

from __future__ import annotations

import math

from kpt.sim._profiles import Efficiency

FP32_BYTES = 4


def batch_norm_busy(
    eff: Efficiency, nbytes: float, shape: tuple[int, ...], hbm_bandwidth: float, units: int
) -> tuple[float, float]:
    """(busy seconds, seconds of HBM bandwidth those bytes take) of one training-mode batch norm
    launch, its forward or its backward, beyond the kernel launch.

    NCHW, where the efficiency table has a row_stream_rate: one block per channel, at most one
    per SM, each streaming its channel's elements at row_stream_rate (bytes/s of fp32
    elements; 16-bit channels stream the same elements/s) and paying block_s; a backward's
    element costs backward_work times a forward's. Otherwise (channels last, or a profile
    without those figures): the bytes at the class's memory curve."""
    channels, per_channel, channels_last, backward = shape
    bandwidth = hbm_bandwidth * eff.memory_e_max
    memory = nbytes / bandwidth
    if channels_last or not eff.row_stream_rate:
        return eff.memory_x_half / bandwidth + memory, memory
    element_s = FP32_BYTES / eff.row_stream_rate
    if backward and eff.backward_work:
        element_s *= eff.backward_work
    waves = math.ceil(channels / max(units, 1))
    return waves * (per_channel * element_s + eff.block_s), memory
