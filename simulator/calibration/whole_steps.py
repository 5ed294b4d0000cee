"""The five whole-step targets of issue 12, as torch-only builders the GPU run and kpt_sim share.

Each builder returns a Workload: a `step()` that runs one whole training (or inference) step
on the device it was built for. Random weights, random data, no downloads. The same code is
timed on a real H200 (measure_h200_steps.py) and run on kpt_sim (predict_h200_steps.py), so
the simulator sees exactly the ops PyTorch issues there.

- cnn_bn: a CIFAR ResNet-10 (BasicBlocks, BatchNorm), batch 128, fp32 (cuDNN TF32), SGD
  with momentum (torch's default foreach on the device);
- gpt2_bf16: GPT-2 small (12 x 768, vocab 50257), batch 8 x 256, bf16 autocast, AdamW;
- bert_base: a BERT-base-like encoder (nn.TransformerEncoder 12 x 768, 12 heads, 3072 FFN),
  batch 16 x 128, an MLM head over 30522 tokens, bf16 autocast, AdamW;
- lstm_lm: a 2-layer LSTM language model (vocab 10000, 512 wide), batch 32 x 64, fp32, AdamW;
- gpt2_infer: GPT-2 small in bf16, one inference forward of batch 8 x 128.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from reference_steps import GPT
from torch import nn


class Workload(NamedTuple):
    name: str
    step: Callable[[], object]
    params: int
    description: str


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))  # fmt: skip

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet10(nn.Module):
    def __init__(self, widths=(64, 128, 256, 512), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())  # fmt: skip
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Encoder(nn.Module):
    """BERT-base-like: token + position embeddings, LayerNorm, post-norm encoder, MLM head."""

    def __init__(self, layers=12, width=768, heads=12, ffn=3072, vocab=30522, context=512):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.ln = nn.LayerNorm(width)
        layer = nn.TransformerEncoderLayer(width, heads, ffn, dropout=0.0, activation="gelu",
                                           batch_first=True)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.encoder(self.ln(x)))


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab=10000, width=512, layers=2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.rnn = nn.LSTM(width, width, layers, batch_first=True)
        self.out = nn.Linear(width, vocab)

    def forward(self, idx):
        y, _ = self.rnn(self.emb(idx))
        return self.out(y)


def _autocast(dev: str, enabled: bool):
    kind = torch.device(dev).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled)


def _lm_loss(logits, target):
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), target.view(-1))


def _training(name, model, make_inputs, loss_fn, opt, dev, bf16, description) -> Workload:
    x, y = make_inputs()

    def step():
        with _autocast(dev, bf16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    params = sum(p.numel() for p in model.parameters())
    return Workload(name, step, params, description)


def build(name: str, dev: str, smoke: bool = False) -> Workload:
    """One workload on device `dev`; smoke shrinks it to run in seconds on a CPU."""
    torch.manual_seed(0)
    if name == "cnn_bn":
        batch, widths = (4, (8, 8, 16, 16)) if smoke else (128, (64, 128, 256, 512))
        model = ResNet10(widths).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return _training(name, model,
                         lambda: (torch.randn(batch, 3, 32, 32, device=dev),
                                  torch.randint(0, 10, (batch,), device=dev)),
                         F.cross_entropy, opt, dev, False,
                         f"ResNet-10 CIFAR, batch {batch}, fp32, SGD momentum")  # fmt: skip
    if name in ("gpt2_bf16", "gpt2_infer"):
        cfg = dict(layers=12, width=768, heads=12, vocab=50257, context=256)
        batch, seq = (8, 256) if name == "gpt2_bf16" else (8, 128)
        if smoke:
            cfg, batch, seq = dict(layers=1, width=32, heads=2, vocab=64, context=16), 2, 16
        model = GPT(**cfg).to(dev)
        idx = torch.randint(0, cfg["vocab"], (batch, seq), device=dev)
        params = sum(p.numel() for p in model.parameters())
        if name == "gpt2_infer":
            model = model.to(torch.bfloat16).eval()

            def infer():
                with torch.inference_mode():
                    return model(idx)

            return Workload(name, infer, params, f"GPT-2 small bf16 forward, batch {batch}x{seq}")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        return _training(name, model, lambda: (idx, torch.randint_like(idx, cfg["vocab"])),
                         _lm_loss, opt, dev, True,
                         f"GPT-2 small, batch {batch}x{seq}, bf16 autocast, AdamW")  # fmt: skip
    if name == "bert_base":
        cfg = dict(layers=12, width=768, heads=12, ffn=3072, vocab=30522)
        batch, seq = 16, 128
        if smoke:
            cfg, batch, seq = dict(layers=1, width=32, heads=2, ffn=64, vocab=64), 2, 16
        model = Encoder(**cfg).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        vocab = cfg["vocab"]
        return _training(name, model,
                         lambda: (torch.randint(0, vocab, (batch, seq), device=dev),
                                  torch.randint(0, vocab, (batch, seq), device=dev)),
                         _lm_loss, opt, dev, True,
                         f"BERT-base-like encoder, batch {batch}x{seq}, bf16 autocast, "
                         "AdamW")  # fmt: skip
    if name == "lstm_lm":
        vocab, width, batch, seq = (64, 16, 2, 8) if smoke else (10000, 512, 32, 64)
        model = LSTMLanguageModel(vocab, width).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return _training(name, model,
                         lambda: (torch.randint(0, vocab, (batch, seq), device=dev),
                                  torch.randint(0, vocab, (batch, seq), device=dev)),
                         _lm_loss, opt, dev, False,
                         f"2-layer LSTM LM {width} wide, batch {batch}x{seq}, fp32, "
                         "AdamW")  # fmt: skip
    raise ValueError(f"workload {name!r} unknown; use one of {', '.join(WORKLOADS)}")


WORKLOADS = ("cnn_bn", "gpt2_bf16", "bert_base", "lstm_lm", "gpt2_infer")
