"""The reference training steps timed on the real H100 (h100_reference_steps.json).

The models kpt_sim's demo and benchmark predict: a GPT-2-small-shaped step and the demo's
small GPT, trained with AdamW on random tokens. Kept apart from the kernel measurements and
free of kpt imports, so the GPU machine runs it with torch alone; kpt-adapter-sim's demo keeps
its own copy of the model, which tests/test_demo_model.py holds to this one.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x):
        b, s, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, w // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, w))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """GPT-2 layout: learned positions, pre-norm blocks, tied input/output embedding."""

    def __init__(self, layers: int, width: int, heads: int, vocab: int, context: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.ln_f(x) @ self.tok.weight.t()


def training_step(dev: str, cfg: dict, precision: str):
    """(model, step): one AdamW training step of the GPT `cfg` on random tokens."""
    torch.manual_seed(0)
    model = GPT(cfg["layers"], cfg["width"], cfg["heads"], cfg["vocab"], cfg["context"]).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idx = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["context"]), device=dev)
    tgt = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["context"]), device=dev)
    autocast_device = torch.device(dev).type  # kpt_sim autocasts as cuda does

    def step():
        with torch.autocast(
            autocast_device, dtype=torch.bfloat16, enabled=precision == "bf16_autocast"
        ):
            logits = model(idx)
            loss = F.cross_entropy(logits.float().view(-1, cfg["vocab"]), tgt.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return model, step


def time_training_step(dev: str, cfg: dict, precision: str, steps: int) -> dict:
    model, step = training_step(dev, cfg, precision)
    cuda = dev.startswith("cuda")
    for _ in range(5):
        step()
    samples = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - t0)
    kernels = None
    if cuda:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        evs = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
        kernels = {
            "count": int(sum(e.count for e in evs)),
            "device_seconds": sum(e.self_device_time_total for e in evs) / 1e6,
        }
    samples.sort()
    params = sum(p.numel() for p in model.parameters())
    tokens = cfg["batch"] * cfg["context"]
    return {
        "precision": precision,
        "step_ms_median": 1e3 * statistics.median(samples),
        "step_ms_min": 1e3 * samples[0],
        "step_ms_p90": 1e3 * samples[int(0.9 * len(samples))],
        "steps_timed": steps,
        "params": params,
        "model_flops_per_step": 6 * params * tokens,
        "kernels_per_step": kernels,
    }


REFERENCE_MODELS = {
    "gpt2_small": {
        "layers": 12,
        "width": 768,
        "heads": 12,
        "vocab": 50257,
        "context": 128,
        "batch": 4,
    },
    "demo_gpt": {"layers": 4, "width": 256, "heads": 4, "vocab": 512, "context": 64, "batch": 8},
}
