"""A GPT with tied input/output embeddings trains on kpt_sim exactly as on the CPU.

Regression test: ``Module.to("kpt_sim")`` used to untie shared parameters (torch made a new
Parameter per module because a wrapper tensor cannot take ``param.data = ...``), so the output
projection's gradient never reached ``wte`` and only that gradient differed from the CPU.
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        # No qkv bias: the key bias has an exactly-zero gradient (softmax ignores a shift), and
        # AdamW would turn its rounding noise into full-size updates on either device.
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)
        self.fc, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class TiedGPT(nn.Module):
    def __init__(self, vocab=32, width=16, layers=2, context=8):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, 2) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied input/output embeddings

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def _train(model, idx, targets, device, steps):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    grads = []
    for _ in range(steps):
        opt.zero_grad()
        model(idx.to(device), targets.to(device)).backward()
        grads.append({n: p.grad.detach().cpu() for n, p in model.named_parameters()})
        opt.step()
    return grads, {n: p.detach().cpu() for n, p in model.named_parameters()}


def test_module_to_keeps_tied_parameters_tied(sim):
    model = TiedGPT().to("kpt_sim")
    assert model.head.weight is model.wte.weight
    assert model.wte.weight.device.type == "kpt_sim"
    assert len(list(model.parameters())) == len(list(TiedGPT().parameters()))
    model.to("kpt_sim:1").half()  # device to device and dtype changes swap in place too
    assert model.head.weight is model.wte.weight
    assert model.wte.weight.device == torch.device("kpt_sim", 1)
    assert model.wte.weight.dtype == torch.float16


def test_back_to_cpu_keeps_ties_with_torch_swap_flag(sim):
    # Leaving the device, torch itself makes new Parameters unless this future flag is on.
    model = TiedGPT().to("kpt_sim")
    before = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model.cpu()
    finally:
        torch.__future__.set_swap_module_params_on_conversion(before)
    assert model.head.weight is model.wte.weight and model.wte.weight.device.type == "cpu"


def test_tied_gpt_all_grads_and_adamw_steps_match_cpu(sim):
    torch.manual_seed(0)
    model = TiedGPT()
    device_model = copy.deepcopy(model).to("kpt_sim")
    idx, targets = torch.randint(0, 32, (2, 8)), torch.randint(0, 32, (2, 8))
    cpu_grads, cpu_params = _train(model, idx, targets, "cpu", steps=2)
    dev_grads, dev_params = _train(device_model, idx, targets, "kpt_sim", steps=2)
    for step, (dev, cpu) in enumerate(zip(dev_grads, cpu_grads)):
        assert dev.keys() == cpu.keys()
        for name in cpu:
            torch.testing.assert_close(
                dev[name],
                cpu[name],
                rtol=1e-4,
                atol=1e-5,
                msg=lambda m, n=name, s=step: f"step {s} grad {n}: {m}",
            )
    for name in cpu_params:
        torch.testing.assert_close(dev_params[name], cpu_params[name], rtol=1e-4, atol=1e-5)


def test_optimizer_made_before_to_still_steps_the_device_parameters(sim):
    # Parameters are swapped in place, so references taken on the CPU stay valid.
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(torch.ones(1, 4)).sum().backward()
    model.to("kpt_sim")
    assert opt.param_groups[0]["params"][0] is model.weight
    assert model.weight.grad.device.type == "kpt_sim"
    before = model.weight.detach().cpu()
    opt.step()
    torch.testing.assert_close(model.weight.detach().cpu(), before - 0.5 * torch.ones(2, 4))
