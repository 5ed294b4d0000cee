"""nn.LSTM, nn.GRU and nn.RNN on kpt_sim as one fused launch per layer each way, as cuDNN runs them.

``aten::lstm.input`` is a composite: on a device without a registered fused RNN it runs cell by
cell, a dozen launches per time step. On CUDA one aten op per layer reaches cuDNN; on the CPU
(the reference) oneDNN runs ``aten::mkldnn_rnn_layer`` per layer, with
``mkldnn_rnn_layer_backward`` as its autograd formula. kpt_sim registers ``lstm.input`` for
AutogradPrivateUse1 (and handles it at the Python key, where calls without autograd arrive)
with the CPU's own layer loop (``aten/src/ATen/native/mkldnn/RNN.cpp``, ``mkldnn_rnn``), so the
daemon runs the CPU reference's kernels and values are equal to it bit for bit. Each layer is
costed as the chip's fused RNN (op class ``rnn``: an input GEMM, then per step a recurrent GEMM
and the cell's elementwise kernel, in series). Without grad the CPU runs oneDNN's inference
kernel and the daemon (grad on: a backward needs the workspace) its training kernel, which
round differently in the last bit.

Covered: float32 LSTMs without projections or packed sequences (what oneDNN runs on the CPU);
anything else keeps torch's composite, cell by cell.

GRU and Elman RNN layers (``gru.input``, ``rnn_tanh.input``, ``rnn_relu.input``; FusedCells) run
as kpt_sim's own ops, ``kpt::rnn_layer`` forward and ``kpt::rnn_layer_backward`` (defined with
the executor, ``kpt.adapters.sim_executor._rnn_layers``), one launch per layer each way, joined
by an autograd Function; costed as the same ``rnn`` class with the cell's gates (3, 1) and the
layer's directions. Covered: layers of any float dtype without packed sequences.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch

from kpt.adapters.sim._plan import out_spec
from kpt.adapters.sim._plan_cache import remember
from kpt.adapters.sim._runtime import runtime
from kpt.adapters.sim_executor._rnn_layers import GATES

aten = torch.ops.aten
kpt_ops = torch.ops.kpt
LSTM_MODE = 2  # ideep::rnn_kind::LSTM
LSTM_GATES = 4
WORKSPACE_CACHE_LIMIT = 1024


class FusedLSTM:
    """``aten::lstm.input`` on kpt_sim, one ``mkldnn_rnn_layer`` launch per layer; oneDNN's
    workspace sizes are kept per layer shape in the Runtime's PlanCache (``lstm_workspaces``)."""

    def __init__(self, launcher: Any) -> None:
        self._launch = launcher.launch  # (cost, op, args, kwargs, adjust) -> the op's results

    def register(self, library: torch.library.Library) -> None:
        library.impl("lstm.input", self.lstm, "AutogradPrivateUse1")

    def handlers(self) -> dict[Any, Any]:
        return {
            aten.lstm.input: lambda func, args, kwargs: self.lstm(*args, **kwargs),
            aten.mkldnn_rnn_layer.default: self.layer,
            aten.mkldnn_rnn_layer_backward.default: self.layer_backward,
        }

    def lstm(self, input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
             batch_first):  # fmt: skip
        """torch's mkldnn_rnn layer loop (the CPU reference's), else torch's composite."""
        if not _fusable(input, hx, params):
            return aten.lstm.input.decompose(input, hx, params, has_biases, num_layers, dropout,
                                             train, bidirectional, batch_first)  # fmt: skip
        hidden = hx[0].shape[-1]
        x = (input.transpose(0, 1) if batch_first else input).contiguous()
        h0, c0 = hx[0].contiguous(), hx[1].contiguous()
        directions = 2 if bidirectional else 1
        stride = 4 if has_biases else 2
        hy, cy = [], []
        for layer in range(num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                w = params[index * stride : (index + 1) * stride]
                b0 = w[2] if has_biases else torch.zeros_like(w[0])
                b1 = w[3] if has_biases else torch.zeros_like(w[1])
                out, h, c, _ = aten.mkldnn_rnn_layer.default(
                    x, w[0], w[1], b0, b1, h0[index], c0[index], direction > 0, [], LSTM_MODE,
                    hidden, num_layers, has_biases, bidirectional, batch_first, train)  # fmt: skip
                outputs.append(out)
                hy.append(h)
                cy.append(c)
            x = outputs[0] if directions == 1 else torch.cat(outputs, -1)
            if dropout and train and layer < num_layers - 1:
                x = torch.dropout(x, dropout, True)
        output = x.transpose(0, 1) if batch_first else x
        return output, torch.stack(hy, 0), torch.stack(cy, 0)

    def layer(self, func: Any, args: tuple, kwargs: dict) -> Any:
        return self._launch(layer_cost, func, args, kwargs, self._size_workspace)

    def layer_backward(self, func: Any, args: tuple, kwargs: dict) -> Any:
        return self._launch(layer_backward_cost, func, args, kwargs, None)

    def _size_workspace(self, plan: Any, func: Any, args: tuple, kwargs: dict) -> Any:
        """oneDNN sizes its workspace at run time (meta says 0 bytes): ask it once per shape."""
        key = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a
                    for a in args if not isinstance(a, list))  # fmt: skip
        workspaces = runtime().plans.lstm_workspaces
        nbytes = workspaces.get(key)
        if nbytes is None:
            zeros = [torch.zeros(a.shape, dtype=a.dtype) if isinstance(a, torch.Tensor) else a
                     for a in args]  # fmt: skip
            # As the daemon runs it: grad mode on there (oneDNN keeps no workspace without it).
            with torch.enable_grad():
                workspace = func(*zeros, **kwargs)[3]  # None when not training
            nbytes = 0 if workspace is None else workspace.numel()
            remember(workspaces, key, nbytes, WORKSPACE_CACHE_LIMIT)
        results = list(plan.results)
        results[3] = ("new", out_spec(((nbytes,), (1,), 0, torch.uint8)) if nbytes else None)
        return plan._replace(results=results)


class FusedCells:
    """``gru.input``, ``rnn_tanh.input`` and ``rnn_relu.input`` on kpt_sim: one
    ``kpt::rnn_layer`` launch per layer forward, one ``kpt::rnn_layer_backward`` each back."""

    def __init__(self, launcher: Any) -> None:
        self._launch = launcher.launch

    def register(self, library: torch.library.Library) -> None:
        for mode in GATES:
            library.impl(f"{mode}.input", partial(self.layers, mode), "AutogradPrivateUse1")

    def handlers(self) -> dict[Any, Any]:
        table: dict[Any, Any] = {
            getattr(aten, mode).input: partial(self._unrecorded, mode) for mode in GATES
        }
        table[kpt_ops.rnn_layer.default] = partial(self._launch, cells_cost)
        table[kpt_ops.rnn_layer_backward.default] = partial(self._launch, cells_backward_cost)
        return table

    def _unrecorded(self, mode: str, func: Any, args: tuple, kwargs: dict) -> Any:
        return self.layers(mode, *args, **kwargs)

    def layers(self, mode, input, hx, params, has_biases, num_layers, dropout, train,
               bidirectional, batch_first):  # fmt: skip
        """torch's layer loop (``_rnn_impl`` in aten's RNN.cpp), one fused op per layer."""
        if not _cells_fusable(input, hx, params):
            composite = getattr(aten, mode).input.decompose
            return composite(input, hx, params, has_biases, num_layers, dropout, train,
                             bidirectional, batch_first)  # fmt: skip
        # Contiguous, as the reference's input projection reads it (a strided one rounds apart).
        x = (input.transpose(0, 1) if batch_first else input).contiguous()
        directions = 2 if bidirectional else 1
        stride = (4 if has_biases else 2) * directions  # parameters a layer
        hy = []
        for layer in range(num_layers):
            weights = list(params[layer * stride : (layer + 1) * stride])
            h0 = hx[layer * directions : (layer + 1) * directions]
            if _recording(x, h0, *weights):
                x, h = _CellLayer.apply(mode, num_layers, x, h0, *weights)
            else:
                x, h = kpt_ops.rnn_layer(x, h0, weights, mode, num_layers)
            hy.append(h)
            if dropout and train and layer < num_layers - 1:
                x = torch.dropout(x, dropout, True)
        output = x.transpose(0, 1) if batch_first else x
        return output, torch.cat(hy, 0)


class _CellLayer(torch.autograd.Function):
    """One layer's two launches joined for autograd: its backward is ``kpt::rnn_layer_backward``
    on what the forward saw (the daemon recomputes the layer's values from them)."""

    @staticmethod
    def forward(ctx, mode, layers, x, hx, *params):
        ctx.mode, ctx.layers = mode, layers
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, hx, *params)
        return tuple(kpt_ops.rnn_layer(x, hx, list(params), mode, layers))

    @staticmethod
    def backward(ctx, grad_output, grad_hy):
        if grad_output is None and grad_hy is None:
            return (None,) * (2 + len(ctx.saved_tensors))
        x, hx, *params = ctx.saved_tensors
        grad_x, grad_hx, grads = kpt_ops.rnn_layer_backward(grad_output, grad_hy, x, hx, params,
                                                             ctx.mode, ctx.layers)  # fmt: skip
        return (None, None, grad_x, grad_hx, *grads)


def _recording(*tensors: Any) -> bool:
    """Whether autograd would record this layer (grad mode on, something needing a gradient)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _cells_fusable(input: Any, hx: Any, params: Any) -> bool:
    return (input.dim() == 3 and hx.dim() == 3 and input.is_floating_point()
            and all(t.dtype == input.dtype for t in (hx, *params)))  # fmt: skip


def _fusable(input: Any, hx: Any, params: Any) -> bool:
    return (input.dtype == torch.float32 and len(hx) == 2 and hx[0].shape[-1] == hx[1].shape[-1]
            and input.dim() == 3 and all(p.dtype == torch.float32 for p in params)
            and torch.backends.mkldnn.is_available())  # fmt: skip


def _rnn_shape(x: torch.Tensor, w_ih: torch.Tensor, hidden: int, backward: int) -> list[int]:
    """The simulator's rnn form: (steps, batch, input, hidden, gates, backward)."""
    steps, batch = x.shape[0], x.shape[1]  # mkldnn_rnn_layer gets its input time-major
    return [steps, batch, x.shape[2], hidden, w_ih.shape[0] // hidden, backward]


def layer_cost(func: Any, args: tuple, kwargs: dict, tensors: list) -> list:
    # mkldnn_rnn_layer runs one direction: hidden_size, num_layers, bidirectional are its
    # 11th, 12th and 14th arguments
    cost = _forward_cost(args[0], args[1], args[2], int(args[10]))
    return _one_direction(cost, int(args[11]), bool(args[13]))


def layer_backward_cost(func: Any, args: tuple, kwargs: dict, tensors: list) -> list:
    # and its backward's 16th, 17th and 20th
    cost = _backward_cost(args[0], args[1], int(args[15]))
    return _one_direction(cost, int(args[16]), bool(args[19]))


def _one_direction(cost: list, layers: int, bidirectional: bool) -> list:
    """One direction's launch: of a bidirectional layer, the layer's cost shared by its two
    launches (cuDNN runs the directions side by side: the shape's 9th entry says two)."""
    if not bidirectional:
        return _stacked(cost, 1, layers)
    op_class, flops, moved, dtype, shape = cost
    return [op_class, flops, moved, dtype, [*shape, 2, layers, 2]]


def cells_cost(func: Any, args: tuple, kwargs: dict, tensors: list) -> list:
    x, hx, params = args[0], args[1], args[2]
    layers = args[4] if len(args) > 4 else kwargs.get("layers", 1)
    return _stacked(_forward_cost(x, params[0], params[1], hx.shape[-1]), hx.shape[0], layers)


def cells_backward_cost(func: Any, args: tuple, kwargs: dict, tensors: list) -> list:
    x, hx, params = args[2], args[3], args[4]
    layers = args[6] if len(args) > 6 else kwargs.get("layers", 1)
    return _stacked(_backward_cost(x, params[0], hx.shape[-1]), hx.shape[0], layers)


def _stacked(cost: list, directions: int, layers: int) -> list:
    """A layer's cost with its directions' work (the shape's 7th entry saying two) and the
    layers of its stack (the 8th, where more than one: cuDNN runs them side by side)."""
    if directions == 1 and layers == 1:
        return cost
    op_class, flops, moved, dtype, shape = cost
    extra = [directions, layers] if layers > 1 else [directions]
    return [op_class, flops * directions, moved * directions, dtype, [*shape, *extra]]


def _forward_cost(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, hidden: int) -> list:
    steps, batch, inp, _, gates, _ = shape = _rnn_shape(x, w_ih, hidden, 0)
    size = x.element_size()
    flops = 2.0 * steps * batch * gates * hidden * (inp + hidden)
    moved = size * (x.numel() + w_ih.numel() + w_hh.numel() + 3 * steps * batch * hidden
                    + steps * batch * gates * hidden)  # fmt: skip
    return ["rnn", flops, moved, _dtype(x), shape]


def _backward_cost(x: torch.Tensor, w_ih: torch.Tensor, hidden: int) -> list:
    steps, batch, inp, _, gates, _ = shape = _rnn_shape(x, w_ih, hidden, 1)
    size = x.element_size()
    flops = 2.0 * 2.0 * steps * batch * gates * hidden * (inp + hidden)  # data and weight grads
    moved = size * (2 * x.numel() + 2 * math.prod(w_ih.shape) + 2 * gates * hidden * hidden
                    + 4 * steps * batch * gates * hidden)  # fmt: skip
    return ["rnn", flops, moved, _dtype(x), shape]


def _dtype(x: torch.Tensor) -> str:
    return str(x.dtype).removeprefix("torch.")
