"""Fused kernels on kpt_sim: SDPA through the PrivateUse1 hook, fused optimizers, foreach default.

Each runs as the one fused launch a GPU runs (counted at the client), costed as that kernel,
with values equal to the CPU reference.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kpt.adapters.sim._fused import foreach_cost, fused_optimizer_cost
from kpt.adapters.sim._runtime import runtime
from kpt.sim import ATTENTION_BACKWARD_WORK

FLASH = "aten::_scaled_dot_product_flash_attention_for_cpu.default"
FLASH_BACKWARD = "aten::_scaled_dot_product_flash_attention_for_cpu_backward.default"


@contextmanager
def launches():
    """Yields a list of (op name, wire cost) for every launch inside the block."""
    client = runtime().client
    seen: list[tuple[str, list | None]] = []
    original = client.launch

    def launch(device, op, *rest, **options):
        seen.append((op, options.get("cost")))
        return original(device, op, *rest, **options)

    client.launch = launch
    try:
        yield seen
    finally:
        client.launch = original


def _qkv(dtype, requires_grad=True, seq=17):
    return [torch.randn(2, 3, seq, 8, dtype=dtype, requires_grad=requires_grad) for _ in range(3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask", [None, "causal", "float", "bool"])
def test_sdpa_forward_backward_one_launch_each_and_bit_equal_to_cpu(sim, dtype, mask):
    torch.manual_seed(0)
    q, k, v = _qkv(dtype)
    attn_mask = {"float": torch.randn(17, 17, dtype=dtype), "bool": torch.rand(17, 17) > 0.3}.get(
        mask
    )
    causal = mask == "causal"
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)
    grad = torch.randn_like(out)
    expected = torch.autograd.grad(out, (q, k, v), grad)
    qs, ks, vs = (t.detach().to("kpt_sim").requires_grad_() for t in (q, k, v))
    mask_s = None if attn_mask is None else attn_mask.to("kpt_sim")
    with launches() as seen:
        out_s = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask_s, is_causal=causal)
        got = torch.autograd.grad(out_s, (qs, ks, vs), grad.to("kpt_sim"))
    assert torch.equal(out_s.cpu(), out)
    for a, b in zip(got, expected):
        assert torch.equal(a.cpu(), b)
    names = [op for op, _ in seen]
    assert names.count(FLASH) == 1 and names.count(FLASH_BACKWARD) == 1
    assert not any("bmm" in n or "softmax" in n for n in names), names
    forward, backward = (cost for op, cost in seen if op in (FLASH, FLASH_BACKWARD))
    assert forward[0] == backward[0] == "attention"
    # (batch*heads, seq_q, seq_k, head_dim, causal[, backward]): the engine skips masked key
    # tiles, and a profile may give the backward its own work
    assert forward[4] == [6, 17, 17, 8, int(causal)]
    assert backward[4] == [6, 17, 17, 8, int(causal), 1]
    assert forward[1] == 4 * 6 * 17 * 17 * 8  # the full product, causal or not
    assert backward[1] == ATTENTION_BACKWARD_WORK * forward[1]


def test_sdpa_inference_mode_and_autocast_take_the_fused_kernel(sim):
    torch.manual_seed(1)
    q, k, v = _qkv(torch.float32, requires_grad=False)
    with torch.inference_mode():
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        with launches() as seen:
            got = F.scaled_dot_product_attention(*(t.to("kpt_sim") for t in (q, k, v)),
                                                 is_causal=True)  # fmt: skip
        assert torch.equal(got.cpu(), expected)
    assert [op for op, _ in seen].count(FLASH) == 1
    with torch.autocast("kpt_sim", dtype=torch.bfloat16), launches() as seen:
        out = F.scaled_dot_product_attention(*(t.to("kpt_sim") for t in (q, k, v)))
    assert out.dtype == torch.bfloat16
    assert [cost[3] for op, cost in seen if op == FLASH] == ["bfloat16"]


def test_sdpa_takes_the_math_path_where_the_cpu_does(sim):
    """Dropout, or a mask that needs a gradient: the CPU runs math, and so does kpt_sim."""
    torch.manual_seed(2)
    q, k, v = _qkv(torch.float32)
    mask = torch.randn(17, 17, requires_grad=True)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    qs, ks, vs = (t.detach().to("kpt_sim").requires_grad_() for t in (q, k, v))
    mask_s = mask.detach().to("kpt_sim").requires_grad_()
    with launches() as seen:
        got = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask_s)
        got.sum().backward()
    assert FLASH not in [op for op, _ in seen]
    assert torch.allclose(got.detach().cpu(), expected, atol=1e-6)
    assert mask_s.grad is not None


def _model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 40), nn.LayerNorm(40), nn.GELU(), nn.Linear(40, 3))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, fused=True),
        lambda p: torch.optim.Adam(p, lr=1e-2, fused=True),
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, fused=True),
        lambda p: torch.optim.SGD(p, lr=1e-2, fused=True),
    ],
    ids=["adamw", "adam", "sgd-momentum", "sgd"],
)
def test_fused_optimizers_run_on_the_device_equal_to_cpu(sim, make):
    model = _model()
    on_sim = copy.deepcopy(model).to("kpt_sim")
    cpu_opt, sim_opt = make(model.parameters()), make(on_sim.parameters())
    sim.reset_fallback_report()
    for _step in range(3):
        x = torch.randn(5, 6)
        for module, opt, dev in ((model, cpu_opt, "cpu"), (on_sim, sim_opt, "kpt_sim")):
            opt.zero_grad()
            module(x.to(dev)).pow(2).mean().backward()
            if dev == "kpt_sim":
                with launches() as seen:
                    opt.step()
            else:
                opt.step()
        fused = [cost for op, cost in seen if op.startswith("aten::_fused_")]
        assert len(fused) == 1, [op for op, _ in seen]  # six tensors: one chunk, one launch
        assert fused[0][0] == "multi_tensor"
    for a, b in zip(model.parameters(), on_sim.parameters()):
        # The CPU's fused kernels run vector lanes and a scalar tail split by thread count,
        # so the reference itself moves in the last bit between processes with other
        # thread counts (the daemon's): equal up to rounding, not bit for bit.
        torch.testing.assert_close(b.detach().cpu(), a.detach(), rtol=1e-6, atol=1e-7)
    assert sim.fallback_report() == {}


def test_fused_optimizer_chunks_like_multi_tensor_apply(sim):
    params = [torch.nn.Parameter(torch.randn(3, device="kpt_sim")) for _ in range(70)]
    for p in params:
        p.grad = torch.ones_like(p)
    opt = torch.optim.AdamW(params, fused=True)
    with launches() as seen:
        opt.step()
    fused = [op for op, _ in seen if op.startswith("aten::_fused_adamw_")]
    # 36 tensors per launch, as CUDA's depth-4 chunks: four lists, the steps passed beside
    assert len(fused) == 2


def test_optimizers_default_to_foreach_on_kpt_sim_as_on_cuda(sim):
    from torch.optim.optimizer import _default_to_fused_or_foreach

    p = torch.nn.Parameter(torch.randn(4, device="kpt_sim"))
    assert _default_to_fused_or_foreach([p], differentiable=False) == (False, True)
    assert _default_to_fused_or_foreach([p], False, use_fused=True) == (True, False)
    p.grad = torch.ones_like(p)
    opt = torch.optim.AdamW([p])
    with launches() as seen:
        opt.step()
    assert any(op.startswith("aten::_foreach_") for op, _ in seen)


def test_costs_count_reads_writes_and_thread_blocks():
    params = [torch.zeros(10), torch.zeros(30)]
    lists = (params, params, params, params, [], [torch.zeros(())] * 2)
    cost = fused_optimizer_cost(torch.ops.aten._fused_adamw_.default, lists, {}, [])
    assert cost[:3] == ["multi_tensor", 12.0 * 40, 7.0 * 4 * 40]
    add = foreach_cost(torch.ops.aten._foreach_add_.List, (params, params), {}, [])
    assert add[:3] == ["multi_tensor", 40.0, 3.0 * 4 * 40]  # two lists read, one written
    # a block per 65536-element chunk of each tensor, as CUDA's multi_tensor_apply
    assert cost[4] == add[4] == [2]
    wide = [torch.zeros(65536), torch.zeros(65537), torch.zeros(3 * 65536)]
    assert foreach_cost(torch.ops.aten._foreach_mul_.Scalar, (wide, 2.0), {}, [])[4] == [6]
    norm = foreach_cost(torch.ops.aten._foreach_norm.Scalar, (params,), {}, [])
    assert norm[0] == "reduction"


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_one_launch_per_layer_each_way_bit_equal_to_cpu(sim, batch_first, layers):
    torch.manual_seed(4)
    rnn = nn.LSTM(8, 6, layers, batch_first=batch_first)
    on_sim = copy.deepcopy(rnn).to("kpt_sim")
    x = torch.randn(3, 5, 8, requires_grad=True)
    out, (h, c) = rnn(x)
    grad = torch.randn_like(out)
    expected = torch.autograd.grad(out, [x, *rnn.parameters()], grad)
    xs = x.detach().to("kpt_sim").requires_grad_()
    with launches() as seen:
        out_s, (h_s, c_s) = on_sim(xs)
        got = torch.autograd.grad(out_s, [xs, *on_sim.parameters()], grad.to("kpt_sim"))
    assert torch.equal(out_s.cpu(), out) and torch.equal(h_s.cpu(), h) and torch.equal(c_s.cpu(), c)
    for a, b in zip(got, expected):
        assert torch.equal(a.cpu(), b)
    costs = [cost for op, cost in seen if op.startswith("aten::mkldnn_rnn_layer")]
    assert [c[0] for c in costs] == ["rnn"] * (2 * layers)
    assert [c[4][5] for c in costs] == [0] * layers + [1] * layers  # forwards, then backwards
    # A stack's layers say how many it holds (kpt_sim prices a layer as its share of the stack).
    assert all(len(c[4]) == (6 if layers == 1 else 8) for c in costs)
    assert all(c[4][6:] == [1, layers] for c in costs if layers > 1)
    assert len(seen) < 12 * layers  # not a dozen launches per time step


def test_a_bidirectional_lstm_launches_each_direction_as_half_of_its_layer(sim):
    torch.manual_seed(10)
    rnn = nn.LSTM(4, 3, 2, bidirectional=True)
    on_sim = copy.deepcopy(rnn).to("kpt_sim")
    x = torch.randn(5, 2, 4, requires_grad=True)
    out, _ = rnn(x)
    grad = torch.randn_like(out)
    expected = torch.autograd.grad(out, [x, *rnn.parameters()], grad)
    xs = x.detach().to("kpt_sim").requires_grad_()
    with launches() as seen:
        out_s, _ = on_sim(xs)
        got = torch.autograd.grad(out_s, [xs, *on_sim.parameters()], grad.to("kpt_sim"))
    assert torch.equal(out_s.cpu(), out)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.cpu(), b)
    costs = [cost for op, cost in seen if op.startswith("aten::mkldnn_rnn_layer")]
    assert len(costs) == 2 * 2 * 2  # two layers, two directions, forward and backward
    # one direction's launch of a two-way layer of a two-layer stack: half the layer's time
    assert all(c[4][6:] == [2, 2, 2] for c in costs)
    assert [c[4][2] for c in costs[:4]] == [4, 4, 6, 6]  # the second layer reads both ways


@pytest.mark.parametrize("training", [True, False])
def test_lstm_without_autograd_is_fused_too(sim, training):
    torch.manual_seed(5)
    rnn = nn.LSTM(4, 4).train(training)
    x = torch.randn(7, 2, 4)
    with torch.no_grad():
        expected = rnn(x)[0]
        with launches() as seen:
            got = copy.deepcopy(rnn).to("kpt_sim")(x.to("kpt_sim"))[0].cpu()  # waits: errors too
    # Without grad the CPU runs oneDNN's inference kernel; the daemon runs with grad on (it
    # must keep the workspace a backward needs), so its training kernel: equal up to rounding.
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert [op for op, _ in seen].count("aten::mkldnn_rnn_layer.default") == 1


RNN_LAYER = "kpt::rnn_layer.default"
RNN_LAYER_BACKWARD = "kpt::rnn_layer_backward.default"


@pytest.mark.parametrize("cls, options, gates", [
    (nn.GRU, {}, 3), (nn.RNN, {"nonlinearity": "tanh"}, 1), (nn.RNN, {"nonlinearity": "relu"}, 1),
])  # fmt: skip
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_gru_and_rnn_one_launch_per_layer_each_way_bit_equal_to_cpu(
    sim, cls, options, gates, batch_first, layers
):
    torch.manual_seed(6)
    rnn = cls(8, 6, layers, batch_first=batch_first, **options)
    on_sim = copy.deepcopy(rnn).to("kpt_sim")
    x = torch.randn(3, 5, 8, requires_grad=True)
    h0 = torch.randn(layers, 3 if batch_first else 5, 6, requires_grad=True)
    out, h = rnn(x, h0)
    grads = torch.randn_like(out), torch.randn_like(h)
    expected = torch.autograd.grad((out, h), [x, h0, *rnn.parameters()], grads)
    xs, h0s = (t.detach().to("kpt_sim").requires_grad_() for t in (x, h0))
    with launches() as seen:
        out_s, h_s = on_sim(xs, h0s)
        got = torch.autograd.grad((out_s, h_s), [xs, h0s, *on_sim.parameters()],
                                  [g.to("kpt_sim") for g in grads])  # fmt: skip
    assert torch.equal(out_s.cpu(), out) and torch.equal(h_s.cpu(), h)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.cpu(), b)
    costs = [(op, cost) for op, cost in seen if op.startswith("kpt::")]
    assert [op for op, _ in costs] == [RNN_LAYER] * layers + [RNN_LAYER_BACKWARD] * layers
    steps, batch = (5, 3) if batch_first else (3, 5)
    order = [*range(layers), *reversed(range(layers))]  # forwards from layer 0, backwards back
    for i, ((_, cost), layer) in enumerate(zip(costs, order)):
        assert cost[0] == "rnn" and cost[3] == "float32"
        stack = [1, layers] if layers > 1 else []  # directions and layers, for a stack
        assert cost[4] == [steps, batch, 8 if layer == 0 else 6, 6, gates, int(i >= layers), *stack]
    # Each layer's two launches, its hidden state's gradient slice and sum, the stack, a
    # batch-first input's copy: none per time step (the composite launches several a step).
    assert len(seen) <= 4 * layers + 2


def test_gru_with_only_the_last_hidden_used_and_under_no_grad(sim):
    torch.manual_seed(7)
    rnn = nn.GRU(4, 5, 2)
    on_sim = copy.deepcopy(rnn).to("kpt_sim")
    x = torch.randn(6, 2, 4)
    _, h = rnn(x)
    expected = torch.autograd.grad(h.sum(), list(rnn.parameters()))
    _, h_s = on_sim(x.to("kpt_sim"))  # the output unused: only the hidden state's gradient
    got = torch.autograd.grad(h_s.sum(), list(on_sim.parameters()))
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.cpu(), b)
    with torch.no_grad(), launches() as seen:
        out_s = on_sim(x.to("kpt_sim"))[0].cpu()
    assert torch.equal(out_s, rnn(x)[0].detach())
    names = [op for op, _ in seen]
    assert names.count(RNN_LAYER) == 2 and RNN_LAYER_BACKWARD not in names


@pytest.mark.parametrize("layers", [1, 2])
def test_a_bidirectional_layer_is_one_launch_each_way_for_both_directions(sim, layers):
    torch.manual_seed(8)
    rnn = nn.GRU(4, 3, layers, bidirectional=True, batch_first=True)
    on_sim = copy.deepcopy(rnn).to("kpt_sim")
    x = torch.randn(2, 5, 4, requires_grad=True)
    out, h = rnn(x)
    grads = torch.randn_like(out), torch.randn_like(h)
    expected = torch.autograd.grad((out, h), [x, *rnn.parameters()], grads)
    xs = x.detach().to("kpt_sim").requires_grad_()
    with launches() as seen:
        out_s, h_s = on_sim(xs)
        got = torch.autograd.grad((out_s, h_s), [xs, *on_sim.parameters()],
                                  [g.to("kpt_sim") for g in grads])  # fmt: skip
    assert torch.equal(out_s.cpu(), out) and torch.equal(h_s.cpu(), h)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a.cpu(), b)
    costs = [cost for op, cost in seen if op.startswith("kpt::")]
    assert len(costs) == 2 * layers
    forward = costs[0][4]
    stack = [layers] if layers > 1 else []
    # steps, batch, input, hidden, gates, forward, directions[, layers of the stack]
    assert forward == [5, 2, 4, 3, 3, 0, 2, *stack]
    if layers == 2:  # the second layer reads both directions' outputs
        assert costs[1][4] == [5, 2, 6, 3, 3, 0, 2, 2]


def test_a_transformer_layer_in_eval_runs_torch_fast_path_as_one_launch(sim):
    torch.manual_seed(9)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        expected = layer(x)
        on_sim = copy.deepcopy(layer).to("kpt_sim")
        with launches() as seen:
            got = on_sim(x.to("kpt_sim")).cpu()
    assert torch.equal(got, expected)  # the CPU's own fused kernel, run by the daemon
    costs = [cost for op, cost in seen if op.startswith("aten::_transformer_encoder_layer_fwd.")]
    assert len(costs) == 1 and costs[0][0] == "encoder" and costs[0][3] == "float32"
    assert list(costs[0][4]) == [2, 10, 10, 32, 4, 64, 0]  # batch, seqs, embed, heads, ffn, layer


@pytest.mark.parametrize("need_weights", [True, False])
def test_multi_head_attention_in_eval_runs_its_fused_op_with_or_without_weights(sim, need_weights):
    torch.manual_seed(10)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(3, 7, 32)
    with torch.no_grad():
        output, weights = mha(x, x, x, need_weights=need_weights)
        on_sim, xs = copy.deepcopy(mha).to("kpt_sim"), x.to("kpt_sim")
        with launches() as seen:
            output_s, weights_s = on_sim(xs, xs, xs, need_weights=need_weights)
        assert torch.equal(output_s.cpu(), output)
    if need_weights:
        assert torch.equal(weights_s.cpu(), weights)
    else:
        assert weights is None and weights_s is None  # as the CPU and CUDA leave them
    costs = [cost for op, cost in seen if op.startswith("aten::_native_multi_head_attention.")]
    assert len(costs) == 1 and costs[0][0] == "encoder"
    assert list(costs[0][4]) == [3, 7, 7, 32, 4, 0, 2 if need_weights else 1]
