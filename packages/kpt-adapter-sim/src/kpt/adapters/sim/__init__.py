"""kpt_sim: the simulator as a real PyTorch device.

``import kpt.adapters.sim`` registers ``torch.device("kpt_sim")``; tensors placed there live in a
simulator daemon, ops run asynchronously there, and ``torch.kpt_sim`` reports simulated time.
"""

from kpt.adapters.sim._device import register as _register
from kpt.adapters.sim._fallback import (
    SimFallbackWarning,
    estimate_failure_report,
    fallback_report,
    reset_fallback_report,
)
from kpt.adapters.sim._module import synchronize as _synchronize
from kpt.adapters.sim._profiler import install as _install_profiler_bridge
from kpt.adapters.sim._runtime import runtime as _runtime_of
from kpt.adapters.sim._runtime import shutdown
from kpt.adapters.sim._tensor import DEVICE_TYPE, SimTensor
from kpt.adapters.sim._version import __version__
from kpt.adapters.sim_hal._errors import (
    KptSimDeviceLostError,
    KptSimError,
    KptSimHangError,
    KptSimInvalidRequestError,
    KptSimLinkDownError,
    KptSimMemoryFaultError,
    KptSimOutOfMemoryError,
)

# kpt_sim's registrations in torch last as long as this object: the package is their one holder.
_registration = _register()
_install_profiler_bridge(_runtime_of, _synchronize)  # torch.profiler shows kpt_sim kernels

__all__ = [
    "DEVICE_TYPE",
    "KptSimDeviceLostError",
    "KptSimError",
    "KptSimHangError",
    "KptSimInvalidRequestError",
    "KptSimLinkDownError",
    "KptSimMemoryFaultError",
    "KptSimOutOfMemoryError",
    "SimFallbackWarning",
    "SimTensor",
    "__version__",
    "estimate_failure_report",
    "fallback_report",
    "reset_fallback_report",
    "shutdown",
]
