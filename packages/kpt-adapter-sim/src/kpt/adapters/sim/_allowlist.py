"""The aten ops the daemon's torch executor may run, by packet name (every overload allowed).

The daemon never runs code from the wire: a launch names an op, and only names listed here are
looked up in ``torch.ops.aten``. Ops that read files, start threads or change global state are not
here; anything not here runs on the client's CPU instead (counted by ``fallback_report()``).
"""

from __future__ import annotations

ALLOWED_OPS: frozenset[str] = frozenset(
    """
    _adaptive_avg_pool2d _adaptive_avg_pool2d_backward _cdist_forward _conj _fused_dropout
    _log_softmax _log_softmax_backward_data _masked_softmax _safe_softmax
    _scaled_dot_product_attention_math _scaled_dot_product_flash_attention_for_cpu
    _scaled_dot_product_flash_attention_for_cpu_backward _softmax _softmax_backward_data
    _to_copy _unsafe_view abs abs_ acos acosh adaptive_avg_pool2d add add_ addbmm addcdiv addcdiv_
    addcmul addcmul_ addmm addmm_ addmv alias all amax amin aminmax any arange argmax argmin asin
    asinh atan atan2 atanh avg_pool2d avg_pool2d_backward baddbmm bernoulli bernoulli_
    binary_cross_entropy binary_cross_entropy_backward binary_cross_entropy_with_logits
    bitwise_and bitwise_not bitwise_or bitwise_xor bmm bucketize cat ceil clamp clamp_ clamp_max
    clamp_max_ clamp_min clamp_min_ clone col2im constant_pad_nd convolution convolution_backward
    copy copy_ cos cosh count_nonzero cumprod cumsum diag diag_embed diagonal_copy div div_
    dot elu elu_backward embedding embedding_dense_backward eq eq_ erf erfinv exp exp2 exp_ expm1
    exponential_ eye fill fill_ flip floor floor_divide fmod frac full full_like gather ge gelu
    gelu_backward geometric_ glu glu_backward gt hardsigmoid hardswish hardtanh hardtanh_backward
    huber_loss im2col index index_add index_add_ index_copy index_copy_ index_fill index_fill_
    index_put index_put_ index_select isinf isnan le leaky_relu leaky_relu_backward lerp lerp_
    lift_fresh linalg_vector_norm linspace log log10 log1p log2 log_normal_ log_sigmoid_backward
    log_sigmoid_forward logaddexp logical_and logical_not logical_or logical_xor logsumexp lt
    masked_fill masked_fill_ masked_scatter max max_pool2d_with_indices
    max_pool2d_with_indices_backward maximum mean min minimum mm mse_loss mse_loss_backward mul
    mul_ multinomial mv nan_to_num native_batch_norm native_batch_norm_backward native_dropout
    native_dropout_backward native_group_norm native_group_norm_backward native_layer_norm
    native_layer_norm_backward ne neg neg_ nll_loss2d_backward nll_loss2d_forward
    nll_loss_backward nll_loss_forward norm normal normal_ ones ones_like pow pow_ prod rand
    rand_like randint randint_like randn randn_like random_ randperm reciprocal reciprocal_
    reflection_pad2d relu relu_ remainder repeat repeat_interleave roll round rsqrt rsqrt_ rsub
    scalar_tensor scatter scatter_ scatter_add scatter_add_ scatter_reduce select_backward
    select_scatter sgn sigmoid sigmoid_ sigmoid_backward sign silu silu_ silu_backward sin sinh
    slice_backward slice_scatter smooth_l1_loss smooth_l1_loss_backward softplus
    softplus_backward sort sqrt sqrt_ square std std_mean sub sub_ sum tanh tanh_ tanh_backward
    threshold threshold_backward topk tril tril_ triu triu_ trunc uniform_ upsample_bilinear2d
    upsample_nearest2d var var_mean where zero_ zeros zeros_like
    _foreach_add _foreach_add_ _foreach_addcdiv_ _foreach_addcmul_ _foreach_div _foreach_div_
    _foreach_lerp_ _foreach_mul _foreach_mul_ _foreach_neg _foreach_sqrt _foreach_sqrt_
    _foreach_sub _foreach_sub_ _foreach_zero_ _foreach_copy_ _foreach_norm _foreach_pow
    _foreach_maximum_ _foreach_reciprocal_ _foreach_clamp_max_ _foreach_clamp_min_
    """.split()
)


def packet_name(qualified: str) -> str:
    """'aten::add.Tensor' -> 'add'; rejects names outside the aten namespace."""
    namespace, _, rest = qualified.partition("::")
    if namespace != "aten" or not rest:
        raise ValueError(f"op {qualified!r} is not an aten op ('aten::name.overload' expected)")
    return rest.split(".", 1)[0]


def is_allowed(qualified: str) -> bool:
    try:
        return packet_name(qualified) in ALLOWED_OPS
    except ValueError:
        return False
