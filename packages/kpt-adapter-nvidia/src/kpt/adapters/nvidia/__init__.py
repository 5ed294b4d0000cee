"""kpt.adapters.nvidia: NVIDIA GPUs through torch.cuda, NCCL and (when installed) NVML."""

from kpt.adapters.nvidia._adapter import NvidiaAdapter
from kpt.adapters.nvidia._nvml import NvmlTelemetry
from kpt.adapters.nvidia._version import __version__

__all__ = ["NvidiaAdapter", "NvmlTelemetry", "__version__"]
