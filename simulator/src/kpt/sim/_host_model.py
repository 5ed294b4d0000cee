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
    rnn_call_us = ...          # optional: per fused RNN launch (its library's set-up), and
    rnn_step_us = ...          # per time step of it (cuDNN issues each step's kernels from
                               # the host, inside the one aten op)
    rnn_backward_step_us = ... # optional: per time step of a backward RNN launch (its data and
                               # weight gradients: more kernels a step); absent, rnn_step_us
    host_op_us = ...           # optional: per op that launches nothing (a view, a transpose,
                               # an allocation), charged before the next launch

    [host.forward_class_us]    # optional: eager launches of these op classes cost this instead
    matmul = ...               # (a linear's weight transpose and bias, a norm's arguments:
    layernorm = ...            #  the Python and dispatcher work around the kernel)

    [host.backward_class_us]   # optional: backward launches of these classes cost this instead
    conv = ...                 # (a library's own work per call: cuDNN's convolution and
    batchnorm = ...            #  batch-norm backward set up their kernels on the host)

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
CLASS_TABLES = ("forward_class_us", "backward_class_us")
OPTIONAL_FIELDS = (*CLASS_TABLES, "rnn_call_us", "rnn_step_us", "rnn_backward_step_us",
                   "host_op_us")  # fmt: skip
MAX_HOST_OPS = 1 << 24  # ops without a launch that one launch message may account for
RNN_CLASS = "rnn"


class HostCosts(NamedTuple):
    """Host seconds per launch by source (a profile's [host] table)."""

    forward_s: float
    backward_s: float
    optimizer_launch_s: float
    optimizer_tensor_s: float
    machine: str = ""
    forward_class_s: tuple[tuple[str, float], ...] = ()  # (op class, seconds) overrides
    rnn_step_s: float = 0.0  # per time step of a fused RNN layer (its library's host loop)
    rnn_call_s: float = 0.0  # per fused RNN launch (its library's set-up)
    host_op_s: float = 0.0  # per op that launches nothing (views, allocations): dispatch alone
    rnn_backward_step_s: float = 0.0  # per time step of a backward RNN launch; 0: rnn_step_s
    backward_class_s: tuple[tuple[str, float], ...] = ()  # (op class, seconds) overrides

    def rnn_s(self, shape: tuple, stepped: bool = True) -> float:
        """A fused RNN launch's library host loop: its set-up and each time step's launches,
        for each direction it runs (shape: kpt.sim's rnn shape, (steps, ..., backward[,
        directions[, layers[, launches]]]): a layer launched a direction at a time loops over
        one); its set-up alone where the library runs every step in one kernel (stepped
        False)."""
        if not stepped:
            return self.rnn_call_s
        backward = len(shape) > 5 and shape[5] and self.rnn_backward_step_s
        per_step = self.rnn_backward_step_s if backward else self.rnn_step_s
        directions = shape[6] if len(shape) > 6 else 1
        launches = shape[8] if len(shape) > 8 else 1
        return self.rnn_call_s + per_step * shape[0] * directions / launches

    def forward_for(self, op_class: str) -> float:
        return _class_figure(self.forward_class_s, op_class, self.forward_s)

    def backward_for(self, op_class: str) -> float:
        return _class_figure(self.backward_class_s, op_class, self.backward_s)

    @classmethod
    def from_table(cls, table: dict, where: str) -> HostCosts:
        per_class = {name: _class_table(table, name, where) for name in CLASS_TABLES}
        unknown = sorted(set(table) - set(HOST_FIELDS) - set(OPTIONAL_FIELDS))
        missing = [f for f in HOST_FIELDS[1:] if f not in table]
        if unknown or missing:
            raise InvalidRequestError(
                f"{where}: [host] has unknown field(s) {unknown} / lacks {missing}; "
                f"it takes {', '.join(HOST_FIELDS)}"
            )
        values = []
        for name in HOST_FIELDS[1:]:
            value = table[name]
            if not _us(value):
                raise InvalidRequestError(
                    f"{where}: field 'host.{name}' = {value!r} must be a number >= 0 (us)"
                )
            values.append(float(value) * US)
        optional = {}
        for name in OPTIONAL_FIELDS[len(CLASS_TABLES) :]:  # the per-second figures
            value = table.get(name, 0.0)
            if not _us(value):
                raise InvalidRequestError(
                    f"{where}: field 'host.{name}' = {value!r} must be a number >= 0 (us)"
                )
            optional[name.replace("_us", "_s")] = float(value) * US
        return cls(*values, machine=str(table.get("machine", "")),
                   forward_class_s=per_class["forward_class_us"],
                   backward_class_s=per_class["backward_class_us"], **optional)  # fmt: skip


def _class_figure(pairs: tuple[tuple[str, float], ...], op_class: str, default: float) -> float:
    """The class's own seconds in (class, seconds) pairs, else `default` (per launch: no dict
    built)."""
    for name, seconds in pairs:
        if name == op_class:
            return seconds
    return default


def _class_table(table: dict, name: str, where: str) -> tuple[tuple[str, float], ...]:
    """A [host.<name>] table: (op class, seconds) pairs, sorted."""
    classes = table.get(name, {})
    if not isinstance(classes, dict) or not all(_us(v) for v in classes.values()):
        raise InvalidRequestError(
            f"{where}: field 'host.{name}' = {classes!r} must map op classes to numbers >= 0 (us)"
        )
    return tuple(sorted((str(k), float(v) * US) for k, v in classes.items()))


def _us(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value >= 0


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

    def __init__(self, costs: HostCosts, persistent=lambda gates, hidden: False) -> None:
        self.costs = costs
        self.phase = FORWARD
        # (gates, hidden) -> whether an RNN layer runs as one persistent kernel (no step loop)
        self.persistent = persistent

    def launch_s(
        self, name: str, tensors: int, op_class: str = "", shape=None, host_ops: int = 0
    ) -> float:
        """Host seconds of one launch, with the `host_ops` ops that launched nothing since the
        previous one (the client counts them: the engine never sees them otherwise)."""
        source = launch_source(name)
        costs = self.costs
        extra = costs.host_op_s * host_ops
        if op_class == RNN_CLASS and shape:
            extra += costs.rnn_s(shape, not self.persistent(int(shape[4]), int(shape[3])))
        if source == OPTIMIZER:
            self.phase = OPTIMIZER
            return costs.optimizer_launch_s + costs.optimizer_tensor_s * tensors + extra
        if source == BACKWARD:
            self.phase = BACKWARD
        elif self.phase == OPTIMIZER:
            self.phase = FORWARD  # the optimizer is done: the next step's forward
        if self.phase == BACKWARD:
            per_launch = costs.backward_for(op_class)
        else:
            per_launch = costs.forward_for(op_class)
        return per_launch + extra

    def wait(self) -> None:
        """The host waited for the device: whatever comes next starts a new forward."""
        self.phase = FORWARD
