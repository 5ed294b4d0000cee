"""A GRU or Elman RNN layer as one op each way: ``kpt::rnn_layer``, ``kpt::rnn_layer_backward``.

cuDNN runs a GRU or RNN layer as one library call; torch has no such aten op on the CPU (its
``gru.input`` is a composite that runs cell by cell), so kpt_sim defines the two ops here, where
both the client (shapes, from the Meta kernels) and the daemon's executor (values, from the CPU
kernels) import them. The CPU kernels run the CPU reference's own code for one layer, both
directions where it has two (``torch.gru`` / ``rnn_tanh`` / ``rnn_relu`` with one layer: a
direction alone would not repeat a bidirectional layer's graph), so values are the reference's
bit for bit; the backward recomputes that layer under autograd and differentiates it, which
repeats the reference's graph for the layer and so its gradients.
"""

from __future__ import annotations

import torch

NAMESPACE = "kpt"
OPS = ("rnn_layer", "rnn_layer_backward")
# mode -> the CPU reference's one-layer function, and the gates of its cell (weights' rows / H).
LAYERS = {"gru": torch.gru, "rnn_tanh": torch.rnn_tanh, "rnn_relu": torch.rnn_relu}
GATES = {"gru": 3, "rnn_tanh": 1, "rnn_relu": 1}

_library = torch.library.Library(NAMESPACE, "FRAGMENT")
_library.define(
    "rnn_layer(Tensor input, Tensor hx, Tensor[] params, str mode, int layers=1) "
    "-> (Tensor, Tensor)"
)
_library.define(
    "rnn_layer_backward(Tensor? grad_output, Tensor? grad_hy, Tensor input, Tensor hx, "
    "Tensor[] params, str mode, int layers=1) -> (Tensor, Tensor, Tensor[])"
)


def _check_mode(mode: str, layers: int = 1) -> None:
    if mode not in LAYERS:
        raise ValueError(f"rnn_layer: mode {mode!r} is not one of {sorted(LAYERS)}")
    if layers < 1:
        raise ValueError(f"rnn_layer: layers (of the layer's stack) must be >= 1, got {layers}")


def rnn_layer(
    input: torch.Tensor, hx: torch.Tensor, params: list[torch.Tensor], mode: str, layers: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer, time-major: input (T, B, I), hx (D, B, H) for D directions, params [w_ih,
    w_hh] or [w_ih, w_hh, b_ih, b_hh] per direction -> (output (T, B, D*H), the last hidden
    states (D, B, H)). layers: how many the layer's stack holds, for its cost alone (cuDNN
    runs a stack's layers side by side); the values do not depend on it."""
    _check_mode(mode, layers)
    directions = hx.shape[0]
    if directions not in (1, 2) or len(params) not in (2 * directions, 4 * directions):
        raise ValueError(f"rnn_layer: hx of {directions} directions takes 2 or 4 parameters "
                         f"a direction, got {len(params)}")  # fmt: skip
    return LAYERS[mode](input, hx, params, len(params) == 4 * directions, 1, 0.0, False,
                        directions == 2, False)  # fmt: skip


def rnn_layer_backward(
    grad_output: torch.Tensor | None,
    grad_hy: torch.Tensor | None,
    input: torch.Tensor,
    hx: torch.Tensor,
    params: list[torch.Tensor],
    mode: str,
    layers: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Gradients of input, hx and each parameter from those of the output and last hidden."""
    leaves = [t.detach().requires_grad_() for t in (input, hx, *params)]
    with torch.enable_grad():
        output, hy = rnn_layer(leaves[0], leaves[1], leaves[2:], mode, layers)
        pairs = [(o, g) for o, g in ((output, grad_output), (hy, grad_hy)) if g is not None]
        if not pairs:
            raise ValueError("rnn_layer_backward: neither grad_output nor grad_hy was given")
        outputs, grads = zip(*pairs)
        got = torch.autograd.grad(outputs, leaves, grads, allow_unused=True)
    got = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, got)]
    return got[0], got[1], got[2:]


def _layer_meta(input, hx, params, mode, layers=1):
    _check_mode(mode, layers)
    return input.new_empty((*input.shape[:2], hx.shape[0] * hx.shape[-1])), hx.new_empty(hx.shape)


def _backward_meta(grad_output, grad_hy, input, hx, params, mode, layers=1):
    _check_mode(mode, layers)
    grads = [p.new_empty(p.shape) for p in params]
    return input.new_empty(input.shape), hx.new_empty(hx.shape), grads


_library.impl("rnn_layer", rnn_layer, "CPU")
_library.impl("rnn_layer", _layer_meta, "Meta")
_library.impl("rnn_layer_backward", rnn_layer_backward, "CPU")
_library.impl("rnn_layer_backward", _backward_meta, "Meta")
