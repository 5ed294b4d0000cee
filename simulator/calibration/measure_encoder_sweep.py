"""torch's fused transformer inference ops on a GPU: kpt-sim's `encoder` class held out.

In eval without grad, nn.TransformerEncoderLayer runs `_transformer_encoder_layer_fwd` and
nn.MultiheadAttention `_native_multi_head_attention` (torch's fast path), one aten op each whose
kernels kpt-sim prices one by one from its calibrated classes (kpt.sim._cost_composite). This
sweep times them over BERT- and GPT-sized shapes, bf16 and fp32: the whole layer, and attention
with and without its weights, each profiled over REPS calls with L2 flushed (the kernels' summed
device time, and each kernel by name). Nothing is fitted on it. Torch only.

Usage (device machine): python3 measure_encoder_sweep.py --out "$OUT"
Smoke test on a CPU:    python3 measure_encoder_sweep.py --out /tmp/x --smoke
"""

from __future__ import annotations

import itertools

import torch
from measure_fused_sweep import profile_cases
from measure_h100 import sweep_main
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def configs(smoke: bool) -> list[tuple]:
    """(batch, seq, embed, heads, ffn, dtype)."""
    if smoke:
        return [(2, 8, 32, 4, 64, "fp32")]
    tokens = ((1, 128), (8, 128), (32, 128), (8, 512))  # (batch, seq)
    widths = ((768, 12, 3072), (1024, 16, 4096))  # BERT-base's and -large's (embed, heads, ffn)
    return [(b, s, e, h, f, dt)
            for (b, s), (e, h, f), dt in itertools.product(tokens, widths, DTYPES)]  # fmt: skip


def cases(smoke: bool, dev: str) -> list:
    out = []
    for batch, seq, embed, heads, ffn, dt in configs(smoke):
        fields = {"batch": batch, "seq": seq, "embed": embed, "heads": heads, "ffn": ffn,
                  "dtype": dt}  # fmt: skip
        dtype = DTYPES[dt]
        layer = nn.TransformerEncoderLayer(embed, heads, ffn, batch_first=True)
        layer = layer.to(dev, dtype).eval()
        x = torch.randn(batch, seq, embed, device=dev, dtype=dtype)

        @torch.no_grad()
        def encoder(layer=layer, x=x):
            return layer(x)

        @torch.no_grad()
        def attention(need_weights, mha=layer.self_attn, x=x):
            return mha(x, x, x, need_weights=need_weights)

        out.append(({**fields, "part": "encoder layer"}, lambda f=encoder: f))
        for need_weights in (False, True):
            part = "attention with weights" if need_weights else "attention"
            out.append(({**fields, "part": part},
                        lambda w=need_weights, f=attention: lambda: f(w)))  # fmt: skip
    return out


def main() -> None:
    sweep_main(__doc__, "{chip}_encoder_sweep.json",
               lambda smoke, dev: {"encoder": profile_cases(cases(smoke, dev), dev)})  # fmt: skip


if __name__ == "__main__":
    main()
