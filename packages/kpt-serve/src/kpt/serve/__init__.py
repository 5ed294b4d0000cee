"""kpt.serve: an LLM inference engine on any kpt device (continuous batching, paged KV cache)."""

from kpt.serve._config import ModelConfig, load_config
from kpt.serve._engine import Engine, EngineConfig, EngineStats
from kpt.serve._llm import LLM
from kpt.serve._request import RequestOutput
from kpt.serve._sampling import OutputKind, SamplingParams
from kpt.serve._version import __version__

__all__ = [
    "LLM",
    "Engine",
    "EngineConfig",
    "EngineStats",
    "ModelConfig",
    "OutputKind",
    "RequestOutput",
    "SamplingParams",
    "__version__",
    "load_config",
]
