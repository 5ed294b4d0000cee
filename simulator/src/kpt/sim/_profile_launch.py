"""A profile's launch, host and fused-RNN fields (optional; absent, the older, simpler model).

How a kernel's launch is split (all measured on the H100, calibration/h100_launch_split.json
and h100_measurements.json "launch"): an isolated kernel costs kernel_launch_us on top of its
work; a CUDA graph's nodes run back to back at kernel_back_to_back_us, the figure the
profiler's kernel times hold; a kernel the host issued on an eager stream, queued behind the
one before, costs kernel_queued_us: the GPU's front end leaves a gap between such kernels
that a graph's nodes do not pay.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kpt.sim._errors import InvalidRequestError
from kpt.sim._host_model import HostCosts

US = 1e-6
GIGA = 1e9


class FusedRnn(NamedTuple):
    """How a vendor library's fused RNN layers run beyond their kernels (the [rnn] table).

    kernel_gap_s: each kernel of a layer after the first waits this much more than a queued
    eager kernel (measured: a layer alone on the GPU against its kernels' sum). A stack of L
    layers, launched a layer at a time as torch does, runs L - 1 of them beside the one below
    (cuDNN's wavefront over layers and steps): each layer above the first adds stack_added of
    a layer alone plus stack_fixed_s, and kpt_sim spreads the stack's time evenly over its
    launches. A bidirectional layer runs its two directions side by side: the second adds
    direction_added of its kernels' time to the first direction alone (None: the directions in
    series); a bidirectional stack's layers run in series (the next layer needs both
    directions' whole outputs). Elman layers (one gate) at most persistent_hidden wide run their
    steps as one persistent kernel a direction (cuDNN's RNN_blockPersist_*<..., 256>), which
    takes a start and a time per step, the backward's its own. Defaults: no gap, layers and
    directions in series, no persistent kernel.
    """

    kernel_gap_s: float = 0.0
    stack_added: float = 1.0
    stack_fixed_s: float = 0.0
    persistent_hidden: int = 0
    persistent_start_s: float = 0.0
    persistent_step_s: float = 0.0
    persistent_backward_start_s: float = 0.0
    persistent_backward_step_s: float = 0.0
    direction_added: float | None = None

    def stack_share(self, layers: int) -> float:
        """One layer's share of a stack of `layers`, as a fraction of a layer alone."""
        return (1 + (layers - 1) * self.stack_added) / layers

    def stack_fixed_share_s(self, layers: int) -> float:
        """One launch's share of the stack's fixed seconds."""
        return (layers - 1) * self.stack_fixed_s / layers

    def kernels_only(self) -> FusedRnn:
        """The layers' kernels alone, back to back, as the profiler's kernel sum times them:
        no gap between them, a stack's layers and a layer's directions in series."""
        return self._replace(kernel_gap_s=0.0, stack_added=1.0, stack_fixed_s=0.0,
                             direction_added=None)  # fmt: skip

    def persistent(self, gates: int, hidden: int) -> bool:
        """Whether a layer runs its steps as one persistent kernel a direction."""
        return gates == 1 and hidden <= self.persistent_hidden

    def persistent_s(self, steps: int, backward: bool) -> float:
        """The persistent kernel's time, as the profiler times it."""
        if backward:
            return self.persistent_backward_start_s + steps * self.persistent_backward_step_s
        return self.persistent_start_s + steps * self.persistent_step_s


LAYERS_IN_SERIES = FusedRnn()
# [rnn] fields in microseconds, by FusedRnn's name; stack_added and persistent_hidden apart.
RNN_MICROSECONDS = {"kernel_gap_us": "kernel_gap_s", "stack_fixed_us": "stack_fixed_s",
                    "persistent_start_us": "persistent_start_s",
                    "persistent_step_us": "persistent_step_s",
                    "persistent_backward_start_us": "persistent_backward_start_s",
                    "persistent_backward_step_us": "persistent_backward_step_s"}  # fmt: skip
RNN_FIELDS = {"stack_added", "direction_added", "persistent_hidden", *RNN_MICROSECONDS}


def launch_and_host_fields(data: dict[str, Any], get, where: str) -> dict[str, Any]:
    """Optional kernel_back_to_back_us, kernel_queued_us, host_issue_us, the pageable host
    link, [host] and [rnn]."""
    launch = float(get("kernel_launch_us"))
    back_to_back = (
        float(get("kernel_back_to_back_us")) if "kernel_back_to_back_us" in data else launch
    )
    queued = float(get("kernel_queued_us")) if "kernel_queued_us" in data else back_to_back
    if not back_to_back <= queued <= launch:
        raise InvalidRequestError(
            f"{where}: fields kernel_back_to_back_us = {back_to_back!r}, kernel_queued_us = "
            f"{queued!r} and kernel_launch_us = {launch!r} must be in that order, smallest first "
            "(a graph's node costs at most a queued kernel, which costs at most an isolated one)"
        )
    host = float(get("host_issue_us")) if "host_issue_us" in data else 0.0
    out: dict[str, Any] = {
        "host_issue_s": host * US,
        "launch_latency_s": (launch - back_to_back) * US,
        "stream_gap_s": (queued - back_to_back) * US,
    }
    link = data.get("host_link", {})
    if "pageable_bandwidth_gbps" in link:
        out["pageable_bandwidth"] = float(get("host_link.pageable_bandwidth_gbps")) * GIGA
        out["pageable_latency_s"] = float(get("host_link.pageable_latency_us")) * US
        if out["pageable_bandwidth"] <= 0:
            raise InvalidRequestError(
                f"{where}: field 'host_link.pageable_bandwidth_gbps' = "
                f"{link['pageable_bandwidth_gbps']!r} must be > 0 (or leave it out)"
            )
    if "host" in data:
        out["host"] = HostCosts.from_table(get("host", dict, None), where)
    if "rnn" in data:
        table = get("rnn", dict, None)
        added = float(get("rnn.stack_added")) if "stack_added" in table else 1.0
        if not 0 < added <= 1:
            raise InvalidRequestError(
                f"{where}: field 'rnn.stack_added' = {table['stack_added']!r} must be in (0, 1] "
                "(a layer stacked on another adds at most a layer alone)"
            )
        fields = {name: float(get(f"rnn.{key}")) * US
                  for key, name in RNN_MICROSECONDS.items() if key in table}  # fmt: skip
        if "persistent_hidden" in table:
            fields["persistent_hidden"] = get("rnn.persistent_hidden", int)
        if "direction_added" in table:
            fields["direction_added"] = float(get("rnn.direction_added"))
        out["rnn"] = FusedRnn(stack_added=added, **fields)
    return out
