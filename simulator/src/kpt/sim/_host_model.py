"""Host time per launch by what issues it: eager dispatch, autograd backward, optimizer foreach.

One host figure per launch cannot fit eager op loops, training steps and optimizers at once
(calibration/HOST_STEPS.md): a forward op pays Python, module and dispatcher time; a backward
node is issued by autograd's C++ engine; a foreach or fused optimizer kernel pays for every
tensor in its lists (grouping by device and dtype, kernel arguments). A profile's ``[host]``
table gives one figure per source, fitted on host-bound programs (calibration/host_model_fit.py)
for the host machine it names:

    [host]
    machine = "..."            # the CPU that drove the GPU the figures were measured on
    forward_us = ...           # per launch issued by eager Python code (forward, inference)
    backward_us = ...          # per launch issued by autograd's backward
    optimizer_launch_us = ...  # per foreach / fused optimizer launch
    optimizer_tensor_us = ...  # per tensor that launch touches

The engine knows a launch by its op name only, so the source is inferred from the step's
phases, as they follow each other on a GPU: a ``*_backward`` op starts the backward, a
``_foreach_*`` or ``_fused_adam*`` / ``_fused_sgd*`` op is the optimizer, the first other op
after the optimizer starts the next forward, and a host wait (synchronize) ends the step.
"""

from __future__ import annotations

from typing import NamedTuple

from kpt.sim._errors import InvalidRequestError

US = 1e-6
FORWARD, BACKWARD, OPTIMIZER = "forward", "backward", "optimizer"
OPTIMIZER_PREFIXES = ("_foreach_", "_fused_adam", "_fused_sgd")
HOST_FIELDS = ("machine", "forward_us", "backward_us", "optimizer_launch_us",
               "optimizer_tensor_us")  # fmt: skip


class HostCosts(NamedTuple):
    """Host seconds per launch by source (a profile's [host] table)."""

    forward_s: float
    backward_s: float
    optimizer_launch_s: float
    optimizer_tensor_s: float
    machine: str = ""

    @classmethod
    def from_table(cls, table: dict, where: str) -> HostCosts:
        unknown = sorted(set(table) - set(HOST_FIELDS))
        missing = [f for f in HOST_FIELDS[1:] if f not in table]
        if unknown or missing:
            raise InvalidRequestError(
                f"{where}: [host] has unknown field(s) {unknown} / lacks {missing}; "
                f"it takes {', '.join(HOST_FIELDS)}"
            )
        values = []
        for name in HOST_FIELDS[1:]:
            value = table[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidRequestError(
                    f"{where}: field 'host.{name}' = {value!r} must be a number >= 0 (us)"
                )
            values.append(float(value) * US)
        return cls(*values, machine=str(table.get("machine", "")))


def launch_source(name: str) -> str | None:
    """OPTIMIZER or BACKWARD when the op's name says so, else None (the phase decides)."""
    packet = name.removeprefix("aten::").split(".", 1)[0]
    if packet.startswith(OPTIMIZER_PREFIXES):
        return OPTIMIZER
    if "backward" in packet:
        return BACKWARD
    return None


class HostIssue:
    """One device's host: the step's phase, and the host seconds each launch costs."""

    def __init__(self, costs: HostCosts) -> None:
        self.costs = costs
        self.phase = FORWARD

    def launch_s(self, name: str, tensors: int) -> float:
        source = launch_source(name)
        costs = self.costs
        if source == OPTIMIZER:
            self.phase = OPTIMIZER
            return costs.optimizer_launch_s + costs.optimizer_tensor_s * tensors
        if source == BACKWARD:
            self.phase = BACKWARD
        elif self.phase == OPTIMIZER:
            self.phase = FORWARD  # the optimizer is done: the next step's forward
        return costs.backward_s if self.phase == BACKWARD else costs.forward_s

    def wait(self) -> None:
        """The host waited for the device: whatever comes next starts a new forward."""
        self.phase = FORWARD
