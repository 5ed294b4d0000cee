"""Load a Hugging Face model folder (config.json + *.safetensors) onto a kpt device."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from kpt.serve._config import ModelConfig
from kpt.serve._models import MODEL_CLASSES, DecoderModel
from kpt.serve._quantize import quantize_linears, quantized_weight_bytes

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


def model_bytes(config: ModelConfig, dtype: torch.dtype, quantization: str | None = None) -> int:
    """Bytes the family's weights take in `dtype`, from config.json alone (tied ones once),
    with the linear layers' weights quantized by `quantization` (None: not)."""
    with torch.device("meta"):
        model = MODEL_CLASSES[config.family](config)
    return quantized_weight_bytes(model, dtype, quantization)


def dummy_model(
    config: ModelConfig,
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
    quantization: str | None = None,
) -> DecoderModel:
    """The family's model with random weights made on the device, no checkpoint read (vLLM's
    load_format "dummy"): for benchmarks of models whose weights are not at hand, and for
    timing-only runs on a simulated chip, where the weights would not fit in host memory.

    Matrices and embeddings draw from N(0, 0.02) as GPT-2 and Llama initialise, norms are 1 and
    biases 0, so activations stay finite and every kernel does its real work.
    """
    with torch.device("meta"):
        model = MODEL_CLASSES[config.family](config).to(dtype)
    model = model.to_empty(device=device)
    seeded = device.type in ("cpu", "cuda")  # elsewhere the device's default generator draws
    generator = torch.Generator(device=device).manual_seed(seed) if seeded else None
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.02, generator=generator)
            elif name.endswith("bias"):
                param.zero_()
            else:  # LayerNorm / RMSNorm scales
                param.fill_(1.0)
    if config.tie_word_embeddings:
        embedding = model.wte if config.family == "gpt2" else model.embed_tokens
        model.lm_head.weight = embedding.weight
    quantize_linears(model, quantization, dtype, device)  # each full weight freed in turn
    model.place_constants(device)
    return model.eval()


def load_model(
    model_dir: str | Path,
    config: ModelConfig,
    dtype: torch.dtype,
    device: torch.device,
    quantization: str | None = None,
) -> DecoderModel:
    """Build the family's model without initialising it, then assign the checkpoint's tensors.
    Linear weights to quantize are quantized one by one as they are read, so the device never
    holds more than one of them in full precision."""
    with torch.device("meta"):
        model = MODEL_CLASSES[config.family](config)
    transposed = getattr(model, "transposed_weights", ())
    quantized = quantize_linears(model, quantization, dtype, device)
    expected = {**dict(model.named_parameters(remove_duplicate=False)), **quantized}
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
                if name in quantized:
                    quantized[name].load_weight(tensor.to(dtype))
                    continue
                state[name] = tensor.to(dtype).contiguous().to(device)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing = [n for n in dict(model.named_parameters()) if n not in state]
    missing += [n for n, layer in quantized.items() if layer.weight.is_meta]
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
