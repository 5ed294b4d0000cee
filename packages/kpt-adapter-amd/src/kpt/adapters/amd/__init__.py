"""kpt.adapters.amd: AMD GPUs through torch.cuda on ROCm (HIP) builds, RCCL and amdsmi."""

from kpt.adapters.amd._adapter import AmdAdapter
from kpt.adapters.amd._smi import AmdSmiTelemetry
from kpt.adapters.amd._version import __version__

__all__ = ["AmdAdapter", "AmdSmiTelemetry", "__version__"]
