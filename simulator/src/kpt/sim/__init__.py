"""kpt.sim: a discrete-event simulator of accelerator chips, served as a device by a daemon."""

from kpt.sim._client import SimClient, TensorRef
from kpt.sim._collectives import (
    CollectiveResult,
    closed_form,
    ring_all_reduce_time,
    tree_all_reduce_time,
)
from kpt.sim._cost import (
    ATTENTION_BACKWARD_WORK,
    efficiency,
    op_time,
    op_timing,
    shape_penalty,
    transfer_time,
)
from kpt.sim._daemon_buffers import MAX_DIMS, MAX_TENSOR_REFS
from kpt.sim._daemon_process import DaemonHandle, start_daemon
from kpt.sim._derive import Datasheet, derive_profile
from kpt.sim._errors import (
    AccessDeniedError,
    DeviceHangError,
    DeviceLostError,
    InvalidRequestError,
    LinkDownError,
    MemoryFaultError,
    OutOfMemoryError,
    SimError,
)
from kpt.sim._executors import DTYPE_SIZES, Executor, View, executor_names, load_executor
from kpt.sim._faults import Fault, load_faults
from kpt.sim._op_cost import OpCost
from kpt.sim._profiles import (
    Profile,
    load_profile,
    parse_profile_spec,
    profile_from_dict,
    profile_table,
    profiles,
)
from kpt.sim._replay import replay
from kpt.sim._simulator import Simulator
from kpt.sim._streams import StreamEngine
from kpt.sim._uncertainty import Interval, interval
from kpt.sim._version import __version__

__all__ = [
    "ATTENTION_BACKWARD_WORK",
    "AccessDeniedError",
    "CollectiveResult",
    "DTYPE_SIZES",
    "DaemonHandle",
    "Datasheet",
    "DeviceHangError",
    "DeviceLostError",
    "Executor",
    "Fault",
    "Interval",
    "InvalidRequestError",
    "LinkDownError",
    "MAX_DIMS",
    "MAX_TENSOR_REFS",
    "MemoryFaultError",
    "OpCost",
    "OutOfMemoryError",
    "Profile",
    "SimClient",
    "SimError",
    "Simulator",
    "StreamEngine",
    "TensorRef",
    "View",
    "__version__",
    "closed_form",
    "derive_profile",
    "efficiency",
    "executor_names",
    "interval",
    "load_executor",
    "load_faults",
    "load_profile",
    "op_time",
    "op_timing",
    "parse_profile_spec",
    "profile_from_dict",
    "profile_table",
    "profiles",
    "replay",
    "ring_all_reduce_time",
    "shape_penalty",
    "start_daemon",
    "transfer_time",
    "tree_all_reduce_time",
]
