"""The torch executor's cost estimates carry kpt.sim's dtype and shape hints.

With them the cost model's refinements (misaligned GEMM rows, attention's score rate, the
per-row cost of norms) apply to ops run on the kpt_sim device; without them every op was
costed as an fp32 op of no shape.
"""

from __future__ import annotations

import math

import pytest

from kpt.adapters.sim_executor import TorchExecutor
from kpt.sim import ATTENTION_BACKWARD_WORK, View, load_profile, op_time

H100 = load_profile("h100-sxm")


def view(dtype: str, *shape: int) -> View:
    strides, step = [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= size
    return View(None, 0, dtype, tuple(shape), tuple(strides))


def t(i: int) -> dict:
    return {"__t": i}


@pytest.fixture(scope="module")
def executor() -> TorchExecutor:
    return TorchExecutor()


def seconds(cost) -> float:
    return op_time(H100, *cost)


def test_matmul_family_gives_m_n_k_and_dtype(executor):
    a, b, out = view("bfloat16", 512, 768), view("bfloat16", 768, 4096), view("bfloat16", 512, 4096)
    mm = executor.estimate("aten::mm.default", [a, b], [out], {"args": [t(0), t(1)]})
    assert (mm.op_class, mm.dtype, mm.shape) == ("matmul", "bfloat16", (512, 4096, 768, 16))
    assert mm.flops == 2 * 512 * 4096 * 768

    bias = view("float32", 4096)
    a32, b32, o32 = (
        view("float32", 512, 768),
        view("float32", 768, 4096),
        view("float32", 512, 4096),
    )
    addmm = executor.estimate("aten::addmm.default", [bias, a32, b32], [o32],
                              {"args": [t(0), t(1), t(2)]})  # fmt: skip
    assert (addmm.dtype, addmm.shape) == ("float32", (512, 4096, 768, 16))

    x, y, z = view("float16", 8, 64, 32), view("float16", 8, 32, 128), view("float16", 8, 64, 128)
    bmm = executor.estimate("aten::bmm.default", [x, y], [z], {"args": [t(0), t(1)]})
    assert bmm.shape == (64, 128, 32, 16) and bmm.flops == 2 * 8 * 64 * 128 * 32


def test_a_misaligned_vocabulary_gemm_is_slow_on_the_sim_device(executor):
    """The H100 runs a 50257-wide bf16 GEMM ~4x slower than a 50256-wide one (calibration)."""

    def cost(n):
        a, b, out = view("bfloat16", 512, 768), view("bfloat16", 768, n), view("bfloat16", 512, n)
        return executor.estimate("aten::mm.default", [a, b], [out], {"args": [t(0), t(1)]})

    assert seconds(cost(50257)) > 3 * seconds(cost(50256))


def test_a_weight_gradient_reading_vocabulary_rows_is_slow_too(executor):
    """dW = dY^T @ X of a 50257-wide head: N and K (768, tokens) are aligned, but dY^T's
    leading dimension is dY's 50257-element row, so cuBLAS runs its align-1 kernel (1109 us on
    an H200 for 2048 tokens, against ~200 us for an aligned GEMM of that size)."""

    def weight_grad(vocab):
        tokens = 2048
        grad_t = View(None, 0, "bfloat16", (vocab, tokens), (1, vocab))  # dY [tokens, vocab].t()
        x, out = view("bfloat16", tokens, 768), view("bfloat16", vocab, 768)
        return executor.estimate("aten::mm.default", [grad_t, x], [out], {"args": [t(0), t(1)]})

    odd, even = weight_grad(50257), weight_grad(50256)
    # dY's rows: 50257 bf16 elements start every 2 bytes; 50256 every 16
    assert odd.shape == (50257, 768, 2048, 2) and even.shape == (50256, 768, 2048, 16)
    assert seconds(odd) > 3 * seconds(even)


def test_a_gemm_operand_starting_off_16_bytes_is_misaligned(executor):
    """A view into the middle of a buffer: cuBLAS checks the start as well as the rows."""

    def cost(offset_elements):
        a = View(None, 2 * offset_elements, "bfloat16", (512, 768), (768, 1))
        b, out = view("bfloat16", 768, 4096), view("bfloat16", 512, 4096)
        return executor.estimate("aten::mm.default", [a, b], [out], {"args": [t(0), t(1)]})

    assert [cost(n).shape[3] for n in (1, 2, 4, 8)] == [2, 4, 8, 16]
    assert seconds(cost(1)) > seconds(cost(2)) == seconds(cost(4)) > seconds(cost(8))


def test_fp32_and_bf16_matmuls_run_at_their_own_rates(executor):
    def cost(dtype):
        a, b = view(dtype, 4096, 4096), view(dtype, 4096, 4096)
        return executor.estimate("aten::mm.default", [a, b], [view(dtype, 4096, 4096)],
                                 {"args": [t(0), t(1)]})  # fmt: skip

    assert seconds(cost("float32")) > 8 * seconds(cost("bfloat16"))


def test_convolution_is_an_implicit_gemm_in_tf32(executor):
    x, w, out = view("float32", 32, 64, 56, 56), view("float32", 128, 64, 3, 3), None
    out = view("float32", 32, 128, 56, 56)
    args = [t(0), t(1), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1]
    conv = executor.estimate("aten::convolution.default", [x, w], [out], {"args": args})
    assert conv.op_class == "conv" and conv.dtype == "tf32"
    assert conv.shape == (32 * 56 * 56, 128, 64 * 9, 9, 0)  # NCHW in memory
    assert conv.flops == 2 * 32 * 56 * 56 * 128 * 64 * 9
    # The same conv on channels-last input: no transposes around the GEMM, so it costs less.
    nhwc = View(None, 0, "float32", (32, 64, 56, 56), (56 * 56 * 64, 1, 56 * 64, 64))
    last = executor.estimate("aten::convolution.default", [nhwc, w], [out], {"args": args})
    assert last.shape == (32 * 56 * 56, 128, 64 * 9, 9, 1)
    assert seconds(last) < seconds(conv)


def test_convolution_backward_names_the_gradients_it_computes(executor):
    x, w = view("float32", 32, 64, 56, 56), view("float32", 128, 64, 3, 3)
    dy = view("float32", 32, 128, 56, 56)
    forward = 2 * 32 * 56 * 56 * 128 * 64 * 9

    def backward(mask):
        args = [t(0), t(1), t(2), [128], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask]
        grads = [view("float32", 32, 64, 56, 56), view("float32", 128, 64, 3, 3)]
        outs = [g for g, asked in zip(grads, mask) if asked]
        return executor.estimate("aten::convolution_backward.default", [dy, x, w], outs,
                                 {"args": args})  # fmt: skip

    both = backward([True, True, False])
    assert both.op_class == "conv" and both.dtype == "tf32"  # on the tensor cores, as forward
    assert both.shape == (32 * 56 * 56, 128, 64 * 9, 9, 0, 3) and both.flops == 2 * forward
    weight = backward([False, True, False])  # a first layer's: no input gradient
    assert weight.shape[-1] == 2 and weight.flops == forward
    assert seconds(weight) < seconds(both)


def test_a_strided_convolution_says_so_and_a_pointwise_one_is_a_gemm(executor):
    # ResNet's 1x1 shortcut, stride 2, and the same 1x1 at stride 1, channels last.
    x = View(None, 0, "bfloat16", (32, 64, 32, 32), (32 * 32 * 64, 1, 32 * 64, 64))
    w = view("bfloat16", 128, 64, 1, 1)

    def forward(stride, side):
        args = [t(0), t(1), None, [stride, stride], [0, 0], [1, 1], False, [0, 0], 1]
        out = view("bfloat16", 32, 128, side, side)
        return executor.estimate("aten::convolution.default", [x, w], [out], {"args": args})

    shortcut, pointwise = forward(2, 16), forward(1, 32)
    assert shortcut.shape == (32 * 16 * 16, 128, 64, 1, 1, 0, 1)
    assert pointwise.shape == (32 * 32 * 32, 128, 64, 1, 1)  # stride 1: no flag
    dy = view("bfloat16", 32, 128, 16, 16)
    args = [t(0), t(1), t(2), [128], [2, 2], [0, 0], [1, 1], False, [0, 0], 1, [True, True]]
    grads = [view("bfloat16", 32, 64, 32, 32), view("bfloat16", 128, 64, 1, 1)]
    backward = executor.estimate("aten::convolution_backward.default", [dy, x, w], grads,
                                 {"args": args})  # fmt: skip
    assert backward.shape == (32 * 16 * 16, 128, 64, 1, 1, 3, 1)


def test_training_batch_norm_is_priced_by_channel(executor):
    x = view("float32", 128, 64, 32, 32)
    stats = [view("float32", 64) for _ in range(4)]

    def cost(op, args):
        return executor.estimate(op, [x, *stats], [view("float32", 128, 64, 32, 32)],
                                 {"args": args})  # fmt: skip

    forward = cost("aten::native_batch_norm.default",
                   [t(0), t(1), t(2), t(3), t(4), True, 0.1, 1e-5])  # fmt: skip
    assert (forward.op_class, forward.shape) == ("batchnorm", (64, 128 * 32 * 32, 0, 0))
    backward = cost("aten::native_batch_norm_backward.default",
                    [t(0), t(0), t(1), t(2), t(3), t(4), t(4), True, 1e-5, [True] * 3])  # fmt: skip
    assert backward.shape == (64, 128 * 32 * 32, 0, 1)
    # One block per channel: 64 channels leave most of an H100's SMs idle, so the NCHW batch
    # norm costs more than streaming its bytes.
    assert seconds(forward) > 2 * op_time(H100, "elementwise", 0, forward.bytes, "fp32")
    evaluation = cost("aten::native_batch_norm.default",
                      [t(0), t(1), t(2), t(3), t(4), False, 0.1, 1e-5])  # fmt: skip
    assert evaluation.op_class == "elementwise"  # eval mode: a per-element affine map


def test_attention_gives_heads_seq_q_seq_k_head_dim(executor):
    q = view("bfloat16", 2, 8, 256, 64)
    k = view("bfloat16", 2, 8, 512, 64)
    v = view("bfloat16", 2, 8, 512, 64)
    outs = [view("bfloat16", 2, 8, 256, 64), view("float32", 2, 8, 256)]
    cost = executor.estimate("aten::_scaled_dot_product_flash_attention_for_cpu.default",
                             [q, k, v], outs, {"args": [t(0), t(1), t(2), 0.0, True]})  # fmt: skip
    assert (cost.op_class, cost.shape) == ("attention", (16, 256, 512, 64, 1))
    assert cost.flops == 4 * 16 * 256 * 512 * 64  # the full product: the engine reads causal
    full = executor.estimate("aten::_scaled_dot_product_flash_attention_for_cpu.default",
                             [q, k, v], outs, {"args": [t(0), t(1), t(2), 0.0, False]})  # fmt: skip
    assert full.shape == (16, 256, 512, 64, 0) and full.flops == cost.flops
    grads = [view("bfloat16", 2, 8, 256, 64), view("bfloat16", 2, 8, 512, 64),
             view("bfloat16", 2, 8, 512, 64)]  # fmt: skip
    backward = executor.estimate(
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward.default",
        [outs[0], q, k, v, outs[0], outs[1]],
        grads,
        {"args": [t(0), t(1), t(2), t(3), t(4), t(5), 0.0, True]},
    )
    # a backward names ATTENTION_BACKWARD_WORK forwards and says it is one (backward_work)
    assert backward.shape == (16, 256, 512, 64, 1, 1)
    assert backward.flops == ATTENTION_BACKWARD_WORK * cost.flops


def test_softmax_and_layer_norm_give_rows_and_cols(executor):
    x = view("float32", 4, 128, 1000)
    soft = executor.estimate("aten::_softmax.default", [x], [view("float32", 4, 128, 1000)],
                             {"args": [t(0), -1, False]})  # fmt: skip
    assert (soft.op_class, soft.shape) == ("softmax", (512, 1000))
    across = executor.estimate("aten::_softmax.default", [x], [view("float32", 4, 128, 1000)],
                               {"args": [t(0), 1, False]})  # fmt: skip
    assert across.shape == (4000, 128)

    x, w, b = view("bfloat16", 64, 256, 768), view("bfloat16", 768), view("bfloat16", 768)
    outs = [
        view("bfloat16", 64, 256, 768),
        view("float32", 64, 256, 1),
        view("float32", 64, 256, 1),
    ]
    ln = executor.estimate("aten::native_layer_norm.default", [x, w, b], outs,
                           {"args": [t(0), [768], t(1), t(2), 1e-5]})  # fmt: skip
    assert (ln.op_class, ln.dtype, ln.shape) == ("layernorm", "bfloat16", (64 * 256, 768))
    assert seconds(ln) > 0


def test_reductions_and_elementwise_ops_carry_their_dtype(executor):
    x = view("bfloat16", 1024, 64)
    total = executor.estimate("aten::sum.dim_IntList", [x], [view("bfloat16", 1024)],
                              {"args": [t(0), [1]]})  # fmt: skip
    assert (total.op_class, total.dtype, total.flops) == ("reduction", "bfloat16", 1024 * 64)
    assert total.shape == (1024, 64, 1, 1)  # the innermost dim: each output's elements adjacent
    y = view("bfloat16", 1024, 64)
    pairwise = executor.estimate("aten::max.other", [x, y], [view("bfloat16", 1024, 64)],
                                 {"args": [t(0), t(1)]})  # fmt: skip
    assert pairwise.op_class == "elementwise" and pairwise.dtype == "bfloat16"
    assert pairwise.bytes == 3 * 1024 * 64 * 2
    copy = executor.estimate("aten::_to_copy.default", [x], [view("float32", 1024, 64)],
                             {"args": [t(0)]})  # fmt: skip
    assert copy.op_class == "copy" and math.isfinite(seconds(copy))


def test_reductions_say_whether_the_reduced_dim_is_strided(executor):
    x = view("float32", 4096, 512)
    rows = executor.estimate("aten::sum.dim_IntList", [x], [view("float32", 4096)],
                             {"args": [t(0), [1]]})  # fmt: skip
    columns = executor.estimate("aten::sum.dim_IntList", [x], [view("float32", 512)],
                                {"args": [t(0), [0]]})  # fmt: skip
    everything = executor.estimate("aten::sum.default", [x], [view("float32")], {"args": [t(0)]})
    assert rows.shape == (4096, 512, 1, 1)
    assert columns.shape == (512, 4096, 0, 1)  # each output strides down a column
    assert everything.shape == (1, 4096 * 512, 1, 1)
    # A transposed input makes the "rows" reduction the strided one.
    xt = View(None, 0, "float32", (4096, 512), (1, 4096))
    strided = executor.estimate("aten::sum.dim_IntList", [xt], [view("float32", 4096)],
                                {"args": [t(0), [1]]})  # fmt: skip
    assert strided.shape == (4096, 512, 0, 1)
    assert all(math.isfinite(seconds(c)) for c in (rows, columns, everything, strided))


def test_reductions_say_whether_they_sum(executor):
    # torch's 16-bit kernels for amax and max accumulate in bf16, sums and means in fp32: the
    # cost model charges the former's rounds more (its shape's 4th element, summing).
    x = view("bfloat16", 8, 65536)  # few outputs, long rows: the rounds of loads bind

    def reduce(op: str):
        return executor.estimate(op, [x], [view("bfloat16", 8)], {"args": [t(0), [1]]})

    summed, averaged, largest = (reduce(op) for op in (
        "aten::sum.dim_IntList", "aten::mean.dim", "aten::amax.default"))  # fmt: skip
    assert summed.shape == averaged.shape == (8, 65536, 1, 1)
    assert largest.shape == (8, 65536, 1, 0)
    assert seconds(largest) > 1.3 * seconds(summed)


def test_a_gather_costs_the_rows_it_reads_not_its_whole_source(executor):
    ids, rows = view("int64", 4), view("bfloat16", 4, 4096)

    def lookup(vocab: int):
        table = view("bfloat16", vocab, 4096)
        return executor.estimate(
            "aten::embedding.default", [table, ids], [rows], {"args": [t(0), t(1)]}
        )

    small, huge = lookup(1000), lookup(128_256)
    assert small == huge  # one row per token, whatever the vocabulary
    assert small.op_class == "copy" and small.bytes == 2 * 4 * 4096 * 2 + 4 * 8
    source = view("float32", 50_000, 256)
    picked = executor.estimate(
        "aten::index_select.default", [source, ids], [view("float32", 4, 256)],
        {"args": [t(0), 0, t(1)]},
    )  # fmt: skip
    assert picked.bytes == 2 * 4 * 256 * 4 + 4 * 8
    assert seconds(picked) < 2 * seconds(executor.estimate(
        "aten::add.Tensor", [view("float32", 4, 256)] * 2, [view("float32", 4, 256)],
        {"args": [t(0), t(1)]},
    ))  # fmt: skip


def test_a_scatter_costs_the_rows_it_writes_not_its_whole_destination(executor):
    slots, new = view("int64", 64), view("bfloat16", 64, 8, 128)

    def write(cache_rows: int):
        cache = view("bfloat16", cache_rows, 8, 128)
        return executor.estimate(
            "aten::index_copy_.default", [cache, slots, new], [cache],
            {"args": [t(0), 0, t(1), t(2)]},
        )  # fmt: skip

    small, huge = write(1024), write(1 << 20)  # a KV cache of 2 GiB per layer
    assert small == huge and small.bytes == 2 * 64 * 8 * 128 * 2 + 64 * 8
