"""Charging a Triton kernel that ran on the host to kpt_sim's clock (``SimAdapter.on_host_kernel``).

The kpt.hal adapter itself lives in kpt.adapters.sim_hal, which discovery imports without
registering the device; ``SimAdapter`` stays importable from here.
"""

from __future__ import annotations

from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim_executor import HOST_KERNEL_OP_PREFIX
from kpt.adapters.sim_hal import SimAdapter, peak_flops
from kpt.hal import HostKernelRun
from kpt.sim import OpCost

__all__ = ["SimAdapter", "charge_host_kernel", "peak_flops"]


def charge_host_kernel(index: int, run: HostKernelRun) -> None:
    rt = runtime()
    index = rt.check_device(index)
    moved = float(run.bytes_in + run.bytes_out)
    # One operation per 4-byte element moved: the elementwise model's FLOP count.
    cost = OpCost("elementwise", moved / 4, moved)
    rt.client.launch(
        index,
        f"{HOST_KERNEL_OP_PREFIX}{run.kernel}",
        [],
        [],
        {"grid": list(run.grid)},
        stream=rt.state[index].stream,
        cost=cost,
    )
