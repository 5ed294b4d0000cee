"""What the simulated host cannot see: a replayed graph, and the caller's own host work.

A CUDA graph replay issues a whole captured sequence of kernels with one host launch; eager
launches of the same kernels pay the host's issue time each. Code that replays graphs on a
GPU (an inference engine's decode step) runs on kpt_sim eagerly, values computed as ever, and
says so with ``graph_replay()``: its launches are then timed as one replay. ``host_work(s)``
tells the simulator that the host spent `s` seconds on Python the simulator does not see
(scheduling, sampling): the next launch issues that much later, while work already queued on
the device goes on, as it does on a GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kpt.adapters.sim._runtime import device_index, runtime


@contextlib.contextmanager
def graph_replay(device: Any = None) -> Iterator[None]:
    """``with torch.kpt_sim.graph_replay():`` the launches inside on `device` (default: the
    current one) are timed as one replayed CUDA graph: the host pays one launch, the kernels
    run back to back. Nothing else changes: values, memory and streams are as without it."""
    index = device_index(device)
    client = runtime().client
    client.graph_replay(index, True)
    try:
        yield
    finally:
        client.graph_replay(index, False)


def host_work(seconds: float, device: Any = None) -> None:
    """The host spent `seconds` on its own work before what it issues next to `device`."""
    if not seconds >= 0:
        raise ValueError(f"host_work: seconds={seconds!r} must be >= 0")
    runtime().client.host_work(device_index(device), float(seconds))
