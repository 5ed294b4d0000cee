"""The host-bound programs both sides run: on the GPU (measure_h200_steps.py) to measure host
time, and on kpt_sim (host_model_fit.py) to record the launches the host model charges.

Tiny tensors, so the host, not the device, sets each program's time. Torch only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

NO_LAUNCH_OPS = 100  # ops that launch nothing, per program, before its one launch
STACKED_LAYERS = 4  # convolution + batch-norm layers under one backward (backward_ops)


def eager_ops(dev: str) -> dict[str, Callable[[], object]]:
    """One launch each: host time per eager call of an op class."""
    x = torch.randn(1024, device=dev)
    w = torch.randn(64, 64, device=dev)
    m = torch.randn(8, 64, device=dev)
    ln_w = torch.ones(64, device=dev)
    image = torch.randn(2, 8, 8, 8, device=dev)
    kernel = torch.randn(8, 8, 3, 3, device=dev)
    stats = torch.zeros(8, device=dev), torch.ones(8, device=dev)
    return {"add": lambda: x + x, "mul_scalar": lambda: x * 1.5, "relu": lambda: torch.relu(x),
            "linear": lambda: F.linear(m, w),
            "layer_norm": lambda: F.layer_norm(m, (64,), ln_w, ln_w),
            "sum": lambda: x.sum(),
            "conv2d": lambda: F.conv2d(image, kernel, padding=1),
            "batch_norm": lambda: F.batch_norm(image, *stats, training=True)}  # fmt: skip


def framework_ops() -> dict[str, Callable[[], object]]:
    """Host work that launches nothing: the interpreter alone (a small pure-Python call
    chain), an nn.Module's call path (an Identity on a CPU tensor), and the dispatcher with a
    CPU kernel (a 1-element CPU add, no driver). Timed beside the eager launches they tell which
    part of a host's speed moved when model code runs slower than the eager loops say."""
    cpu = torch.ones(1)
    identity = torch.nn.Identity()

    def python_calls(n: int = 8) -> int:
        return sum(len(str(i)) for i in range(n))

    return {"python": python_calls, "module_call": lambda: identity(cpu),
            "cpu_add": lambda: cpu + cpu}  # fmt: skip


def backward_ops(dev: str) -> dict[str, Callable[[], object]]:
    """An op's forward and its autograd backward (torch.autograd.grad: no accumulation into
    .grad), for the host time of the library calls a backward node makes (cuDNN's convolution
    and batch-norm backward); and a stack of both under one backward, which separates the
    engine's start-up (once per call) from the nodes' calls."""
    image = torch.randn(2, 8, 8, 8, device=dev, requires_grad=True)
    kernel = torch.randn(8, 8, 3, 3, device=dev, requires_grad=True)
    weight = torch.ones(8, device=dev, requires_grad=True)
    bias = torch.zeros(8, device=dev, requires_grad=True)
    stats = torch.zeros(8, device=dev), torch.ones(8, device=dev)
    grad = torch.randn(2, 8, 8, 8, device=dev)

    def conv2d():
        return torch.autograd.grad(F.conv2d(image, kernel, padding=1), (image, kernel), grad)

    def batch_norm():
        y = F.batch_norm(image, *stats, weight, bias, training=True)
        return torch.autograd.grad(y, (image, weight, bias), grad)

    def conv_bn_layers():
        # STACKED_LAYERS layers under one autograd.grad call: the engine starts once, as in a
        # training step, so its start-up is shared by 2 x STACKED_LAYERS library calls.
        y = image
        for _ in range(STACKED_LAYERS):
            y = F.batch_norm(F.conv2d(y, kernel, padding=1), *stats, weight, bias, training=True)
        return torch.autograd.grad(y, (image, kernel, weight, bias), grad)

    return {"conv2d": conv2d, "batch_norm": batch_norm,
            f"conv2d_batch_norm_x{STACKED_LAYERS}": conv_bn_layers}  # fmt: skip


def no_launch_programs(dev: str) -> dict[str, Callable[[], object]]:
    """NO_LAUNCH_OPS views (or allocations), then one add: host time of ops without a kernel."""
    m = torch.randn(8, 64, device=dev)
    x = torch.randn(1024, device=dev)

    def views():
        for _ in range(NO_LAUNCH_OPS):
            m.view(64, 8)
        return x + x

    def transposes():
        for _ in range(NO_LAUNCH_OPS):
            m.transpose(0, 1)
        return x + x

    def allocations():
        for _ in range(NO_LAUNCH_OPS):
            torch.empty(1024, device=dev)
        return x + x

    return {f"view x{NO_LAUNCH_OPS}, add": views,
            f"transpose x{NO_LAUNCH_OPS}, add": transposes,
            f"empty x{NO_LAUNCH_OPS}, add": allocations}  # fmt: skip
