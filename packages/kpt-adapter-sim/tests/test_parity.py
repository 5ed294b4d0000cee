"""Values on kpt_sim match the CPU: forward, backward and optimizer steps per module family."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F


class TinyGPT(nn.Module):
    def __init__(self, vocab=32, width=16, layers=1, context=8):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.ln = nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.head = nn.Linear(width, 4 * width), nn.Linear(width, vocab)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, idx):
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        q, k, v = self.qkv(self.ln(x)).split(x.shape[-1], dim=2)
        q, k, v = (z.view(b, t, 2, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, -1))
        x = x + self.fc2(F.gelu(self.fc(x), approximate="tanh"))
        return self.head(x)


FAMILIES = {
    "mlp": (lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)),
            lambda: torch.randn(4, 8)),
    "cnn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 2)),
            lambda: torch.randn(2, 3, 8, 8)),
    "gru": (lambda: nn.GRU(4, 8, num_layers=2, batch_first=True), lambda: torch.randn(2, 5, 4)),
    "embedding": (lambda: nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)),
                  lambda: torch.randint(0, 10, (3, 5))),
    "transformer": (lambda: nn.TransformerEncoder(
                        nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 1),
                    lambda: torch.randn(2, 6, 16)),
    "gpt": (TinyGPT, lambda: torch.randint(0, 32, (2, 8))),
}  # fmt: skip


def _step(model, x, optimizer_cls, device):
    optimizer = optimizer_cls(model.parameters(), lr=1e-2)
    out = model(x.to(device))
    out = out[0] if isinstance(out, tuple) else out
    loss = out.float().pow(2).mean()
    loss.backward()
    grads = [p.grad.detach().cpu() for p in model.parameters()]
    optimizer.step()
    return loss.detach().cpu(), grads, [p.detach().cpu() for p in model.parameters()]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_forward_backward_sgd_match_cpu(sim, family):
    make_model, make_input = FAMILIES[family]
    torch.manual_seed(0)
    model, x = make_model(), make_input()
    device_model = copy.deepcopy(model).to("kpt_sim")
    assert all(p.device.type == "kpt_sim" for p in device_model.parameters())
    cpu = _step(model, x, torch.optim.SGD, "cpu")
    dev = _step(device_model, x, torch.optim.SGD, "kpt_sim")
    torch.testing.assert_close(dev[0], cpu[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(dev[1] + dev[2], cpu[1] + cpu[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_adamw_steps_match_cpu(sim):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    device_model = copy.deepcopy(model).to("kpt_sim")
    x = torch.randn(16, 8)
    for m, device in ((model, "cpu"), (device_model, "kpt_sim")):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        for _ in range(3):
            opt.zero_grad()
            m(x.to(device)).pow(2).mean().backward()
            opt.step()
    for a, b in zip(device_model.parameters(), model.parameters()):
        torch.testing.assert_close(a.detach().cpu(), b.detach(), rtol=1e-4, atol=1e-5)
