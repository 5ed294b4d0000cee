"""kpt.adapters.intel: Intel GPUs through torch.xpu, with XCCL or oneCCL collectives."""

from kpt.adapters.intel._adapter import IntelAdapter
from kpt.adapters.intel._version import __version__

__all__ = ["IntelAdapter", "__version__"]
