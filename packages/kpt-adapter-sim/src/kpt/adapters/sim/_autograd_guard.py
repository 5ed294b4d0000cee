"""Refuse autograd graphs on kpt_sim:1 and higher before torch's engine asserts on them.

torch's Python device guard (torch/csrc/acc/Module.cpp, PythonDeviceGuard::deviceCount) reports
one device, so the autograd engine makes one ready queue for PrivateUse1 and backward through a
tensor on kpt_sim:N, N >= 1, dies in an INTERNAL ASSERT `device.index() < device_ready_queues_
.size()` (torch/csrc/autograd/engine.cpp). There is no Python-side fix in torch 2.11-2.13, so an
op that would record a graph on such a device raises a RuntimeError that says what to do.
Forward-only and no_grad work on several devices in one process is unaffected.
"""

from __future__ import annotations

from typing import Any

import torch

_grad_enabled = torch.is_grad_enabled
# Ops that never record history even on inputs requiring grad (Module.to's swap detaches).
_NO_HISTORY = frozenset({"aten::detach.default", "aten::alias.default"})


def check_graph_device(device: int, tensors: Any, name: str) -> None:
    """Raise if an autograd graph is being built on ``device`` >= 1 (call only when device > 0)."""
    if name in _NO_HISTORY or not _grad_enabled():
        return
    if any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
        raise RuntimeError(
            f"{name}: kpt_sim:{device} cannot record autograd graphs in this process: torch's "
            "autograd engine makes one ready queue for a Python-registered device "
            "(PythonDeviceGuard::deviceCount in torch/csrc/acc/Module.cpp returns 1), so "
            f"backward on kpt_sim:{device} would fail an internal assert in "
            "torch/csrc/autograd/engine.cpp. Train on several simulated devices with one process "
            f"per device: KPT_SIM_VISIBLE_DEVICES={device} makes daemon device {device} this "
            "process's kpt_sim:0. Forward-only use (torch.no_grad()) of several devices works."
        )
