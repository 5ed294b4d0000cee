"""GPT-2 and Llama decoders written for the engine: a flat batch of tokens, paged KV.

Each model takes the step's tokens flattened across sequences ([T] ids and positions), so
linear layers see no padding, and reads and writes its KV cache through AttentionMetadata.
Parameter names follow the Hugging Face checkpoints after the family prefix is stripped
(see _loader.py), so weights load by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kpt.serve._attention import AttentionMetadata, paged_attention, write_kv
from kpt.serve._config import ModelConfig, gelu_approximation


class KVCache:
    """The pool's storage: per layer, K and V of shape [num_blocks, block_size, kv_heads, dim]."""

    def __init__(
        self,
        config: ModelConfig,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        # One block past the pool's: the scratch block, where padded steps (CUDA graphs)
        # write the KV of their pad tokens. No sequence's table names it, so nobody reads it.
        shape = (num_blocks + 1, block_size, config.num_kv_heads, config.head_dim)
        self.scratch_slot = num_blocks * block_size
        self.keys = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)
        ]
        self.values = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)
        ]

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        return config.kv_bytes_per_token * block_size * torch.empty((), dtype=dtype).element_size()


class DecoderModel(nn.Module):
    """What the engine calls: hidden states for a flat batch, and logits for chosen rows."""

    config: ModelConfig

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        cache: KVCache,
    ) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def place_constants(self, device: torch.device) -> None:
        """Create the tensors that are not weights (RoPE tables) on the engine's device."""


# --- GPT-2 -----------------------------------------------------------------------------


class _Gpt2Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.heads, self.head_dim = config.num_heads, config.head_dim

    def forward(self, x, meta, k_cache, v_cache):
        q, k, v = self.c_attn(x).split(self.heads * self.head_dim, dim=-1)
        shape = (x.shape[0], self.heads, self.head_dim)
        q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
        write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
        out = paged_attention(q, k_cache, v_cache, meta, 1.0 / math.sqrt(self.head_dim))
        return self.c_proj(out)


class _Gpt2Mlp(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.approximate = gelu_approximation(config)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class _Gpt2Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = _Gpt2Attention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = _Gpt2Mlp(config)

    def forward(self, x, meta, k_cache, v_cache):
        x = x + self.attn(self.ln_1(x), meta, k_cache, v_cache)
        return x + self.mlp(self.ln_2(x))


class Gpt2Model(DecoderModel):
    """GPT-2: learned positions, pre-LayerNorm blocks, GELU (tanh) MLP, tied LM head."""

    # Hugging Face stores GPT-2's projections as Conv1D ([in, out]); these load transposed.
    transposed_weights = ("c_attn.weight", "c_proj.weight", "c_fc.weight")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position, config.hidden_size)
        self.h = nn.ModuleList(_Gpt2Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight

    def forward(self, input_ids, positions, meta, cache):
        x = self.wte(input_ids) + self.wpe(positions)
        for i, block in enumerate(self.h):
            x = block(x, meta, cache.keys[i], cache.values[i])
        return self.ln_f(x)

    def logits(self, hidden):
        return self.lm_head(hidden)


# --- Llama -----------------------------------------------------------------------------


class _RmsNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        # In float32 like transformers' LlamaRMSNorm, so bf16 runs round the same way.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h, kvh, d = config.num_heads, config.num_kv_heads, config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, h * d, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, kvh * d, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, kvh * d, bias=bias)
        self.o_proj = nn.Linear(h * d, config.hidden_size, bias=bias)
        self.heads, self.kv_heads, self.head_dim = h, kvh, d

    def forward(self, x, cos, sin, meta, k_cache, v_cache):
        t = x.shape[0]
        q = self.q_proj(x).view(t, self.heads, self.head_dim)
        k = self.k_proj(x).view(t, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(t, self.kv_heads, self.head_dim)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
        out = paged_attention(q, k_cache, v_cache, meta, 1.0 / math.sqrt(self.head_dim))
        return self.o_proj(out)


class _LlamaMlp(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        size, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(size, inner, bias=bias)
        self.up_proj = nn.Linear(size, inner, bias=bias)
        self.down_proj = nn.Linear(inner, size, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _LlamaBlock(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = _RmsNorm(config.hidden_size, config.norm_eps)
        self.self_attn = _LlamaAttention(config)
        self.post_attention_layernorm = _RmsNorm(config.hidden_size, config.norm_eps)
        self.mlp = _LlamaMlp(config)

    def forward(self, x, cos, sin, meta, k_cache, v_cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, meta, k_cache, v_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(DecoderModel):
    """Llama: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention."""

    transposed_weights = ()

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(_LlamaBlock(config) for _ in range(config.num_layers))
        self.norm = _RmsNorm(config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # A plain attribute, not a buffer: it stays float32 whatever dtype the weights take.
        self.inv_freq = self._inverse_frequencies(torch.device("cpu"))

    def _inverse_frequencies(self, device: torch.device) -> torch.Tensor:
        d, theta = self.config.head_dim, self.config.rope_theta
        exponents = torch.arange(0, d, 2, dtype=torch.float32, device="cpu") / d
        return (1.0 / theta**exponents).to(device)

    def place_constants(self, device: torch.device) -> None:
        self.inv_freq = self._inverse_frequencies(device)

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype):
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]  # [T, 1, head_dim]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids, positions, meta, cache):
        x = self.embed_tokens(input_ids)
        cos, sin = self._rope(positions, x.dtype)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, meta, cache.keys[i], cache.values[i])
        return self.norm(x)

    def logits(self, hidden):
        return self.lm_head(hidden)


MODEL_CLASSES: dict[str, type[DecoderModel]] = {"gpt2": Gpt2Model, "llama": LlamaModel}
