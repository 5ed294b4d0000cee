"""kpt.sim: a discrete-event simulator of accelerator chips, served as a device by a daemon."""

from kpt.sim._cost import OpCost, efficiency, op_time, op_timing, shape_penalty, transfer_time
from kpt.sim._errors import (
    DeviceHangError,
    DeviceLostError,
    InvalidRequestError,
    LinkDownError,
    MemoryFaultError,
    OutOfMemoryError,
    SimError,
)
from kpt.sim._faults import Fault, load_faults
from kpt.sim._profiles import Profile, load_profile, profile_table, profiles
from kpt.sim._simulator import Simulator
from kpt.sim._version import __version__

__all__ = [
    "DeviceHangError",
    "DeviceLostError",
    "Fault",
    "InvalidRequestError",
    "LinkDownError",
    "MemoryFaultError",
    "OpCost",
    "OutOfMemoryError",
    "Profile",
    "SimError",
    "Simulator",
    "__version__",
    "efficiency",
    "load_faults",
    "load_profile",
    "op_time",
    "op_timing",
    "profile_table",
    "profiles",
    "shape_penalty",
    "transfer_time",
]
