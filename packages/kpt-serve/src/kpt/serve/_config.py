"""What the engine needs to know about a model, read from a Hugging Face config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Forms a model's linear weights may be served in besides the engine's dtype (_quantize.py).
QUANTIZATIONS = ("int8", "fp8")

SUPPORTED_FAMILIES = ("gpt2", "llama")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of one decoder-only model, independent of the family's spelling."""

    family: str  # "gpt2" or "llama"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position: int
    norm_eps: float
    rope_theta: float = 10000.0
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = True
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str = "float32"
    # GPT-2's MLP activation as transformers names it: "gelu_new" (tanh approximation, GPT-2's
    # own checkpoints) or "gelu" (exact, as torch's nn.GELU() trains).
    activation: str = "gelu_new"

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V one token holds across all layers, per byte of the cache dtype."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim


def _eos_ids(raw: dict) -> tuple[int, ...]:
    eos = raw.get("eos_token_id")
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, list) else (int(eos),)


_GELU_APPROXIMATION = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


def _gpt2_activation(raw: dict) -> str:
    name = raw.get("activation_function", "gelu_new")
    if name not in _GELU_APPROXIMATION:
        raise ValueError(
            f"config.json: activation_function {name!r} is not one kpt-serve runs for GPT-2; "
            f"use one of {sorted(_GELU_APPROXIMATION)}"
        )
    return name


def gelu_approximation(config: ModelConfig) -> str:
    """torch's F.gelu ``approximate=`` for the model's activation."""
    return _GELU_APPROXIMATION[config.activation]


def load_config(model_dir: str | Path) -> ModelConfig:
    """Read model_dir/config.json; a family the engine has no code for is refused by name."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a model folder needs config.json and *.safetensors "
            "(save one with transformers' save_pretrained)"
        )
    raw = json.loads(path.read_text())
    family = raw.get("model_type")
    if family == "gpt2":
        hidden = raw["n_embd"]
        heads = raw["n_head"]
        return ModelConfig(
            family="gpt2",
            vocab_size=raw["vocab_size"],
            hidden_size=hidden,
            num_layers=raw["n_layer"],
            num_heads=heads,
            num_kv_heads=heads,
            head_dim=hidden // heads,
            intermediate_size=raw.get("n_inner") or 4 * hidden,
            max_position=raw["n_positions"],
            norm_eps=raw.get("layer_norm_epsilon", 1e-5),
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=raw.get("tie_word_embeddings", True),
            eos_token_ids=_eos_ids(raw),
            torch_dtype=str(raw.get("torch_dtype") or raw.get("dtype") or "float32"),
            activation=_gpt2_activation(raw),
        )
    if family == "llama":
        # transformers 5 writes rope_parameters; 4.x wrote rope_scaling (null when plain).
        scaling = raw.get("rope_scaling") or raw.get("rope_parameters")
        if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
            raise ValueError(
                f"{path}: rope_scaling {scaling!r} is not supported yet; "
                "only plain RoPE (rope_scaling null or rope_type 'default') is"
            )
        hidden = raw["hidden_size"]
        heads = raw["num_attention_heads"]
        rope = raw.get("rope_parameters") or {}
        return ModelConfig(
            family="llama",
            vocab_size=raw["vocab_size"],
            hidden_size=hidden,
            num_layers=raw["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or hidden // heads,
            intermediate_size=raw["intermediate_size"],
            max_position=raw.get("max_position_embeddings", 2048),
            norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta", raw.get("rope_theta", 10000.0))),
            attention_bias=raw.get("attention_bias", False),
            mlp_bias=raw.get("mlp_bias", False),
            tie_word_embeddings=raw.get("tie_word_embeddings", False),
            eos_token_ids=_eos_ids(raw),
            torch_dtype=str(raw.get("torch_dtype") or raw.get("dtype") or "float32"),
        )
    raise ValueError(
        f"{path}: model_type {family!r} is not supported; kpt-serve runs {SUPPORTED_FAMILIES}"
    )
