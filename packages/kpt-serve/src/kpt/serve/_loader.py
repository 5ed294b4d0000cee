"""Load a Hugging Face model folder (config.json + *.safetensors) onto a kpt device."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from kpt.serve._config import ModelConfig
from kpt.serve._models import MODEL_CLASSES, DecoderModel

# Checkpoint prefixes of the families' LM-head wrappers (GPT2LMHeadModel, LlamaForCausalLM).
_PREFIXES = ("transformer.", "model.")
# Buffers some GPT-2 checkpoints carry that are not weights (the causal mask).
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def checkpoint_files(model_dir: str | Path) -> list[Path]:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"no *.safetensors in {model_dir}: save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    return files


def checkpoint_bytes(model_dir: str | Path, dtype: torch.dtype) -> int:
    """Bytes the weights take on the device in `dtype` (read from the file headers only)."""
    size = torch.empty((), dtype=dtype).element_size()
    total = 0
    for path in checkpoint_files(model_dir):
        with safe_open(path, framework="pt") as f:
            for name in sorted(f.keys()):
                count = 1
                for dim in f.get_slice(name).get_shape():
                    count *= dim
                total += count * size
    return total


def load_model(
    model_dir: str | Path, config: ModelConfig, dtype: torch.dtype, device: torch.device
) -> DecoderModel:
    """Build the family's model without initialising it, then assign the checkpoint's tensors."""
    with torch.device("meta"):
        model = MODEL_CLASSES[config.family](config)
    transposed = getattr(model, "transposed_weights", ())
    expected = dict(model.named_parameters(remove_duplicate=False))
    state: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(model_dir):
        with safe_open(path, framework="pt", device="cpu") as f:
            for raw_name in sorted(f.keys()):
                name = raw_name
                for prefix in _PREFIXES:
                    if name.startswith(prefix):
                        name = name[len(prefix) :]
                        break
                if name.endswith(_IGNORED_SUFFIXES) or name not in expected:
                    continue
                tensor = f.get_tensor(raw_name)
                if name.endswith(transposed) and tensor.dim() == 2:
                    tensor = tensor.t()
                state[name] = tensor.to(dtype).contiguous().to(device)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing = [n for n in dict(model.named_parameters()) if n not in state]
    if missing:
        raise ValueError(
            f"{model_dir}: the checkpoint lacks {len(missing)} weights the {config.family} "
            f"model needs, e.g. {missing[:3]}; is config.json from the same model?"
        )
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        embedding = model.wte if config.family == "gpt2" else model.embed_tokens
        model.lm_head.weight = embedding.weight
    model.place_constants(device)
    return model.eval()
