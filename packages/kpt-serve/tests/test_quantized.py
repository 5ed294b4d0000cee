"""Quantized variants: int8 weight-only and fp8 layers, their kernels, loading, and the engine
serving them on the CPU and on kpt_sim (values, simulated speed, memory)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_gpt2, make_llama, random_prompts
from torch import nn

from kpt.serve import LLM, SamplingParams
from kpt.serve._config import load_config
from kpt.serve._loader import model_bytes
from kpt.serve._quantize import ActivationQuantizer, QuantizedLinear, _fp8_reach

CPU = torch.device("cpu")


def _layer(n: int, k: int, method: str, dtype=torch.float32, device=CPU, bias=True):
    torch.manual_seed(n * 1000 + k)
    linear = nn.Linear(k, n, bias=bias, dtype=dtype)
    layer = QuantizedLinear(linear, method, dtype, device)
    layer.load_weight(linear.weight)
    return linear, layer


def test_int8_weights_round_to_the_nearest_step_of_their_channel():
    linear, layer = _layer(24, 40, "int8")
    w = linear.weight.detach()
    scale = w.abs().amax(dim=1) / 127
    assert layer.weight.dtype == torch.int8
    assert torch.equal(layer.weight_scale, scale)
    # Each weight is its channel's step times an integer, at most half a step away.
    error = (layer.weight.float() * scale[:, None] - w).abs()
    assert (error <= scale[:, None] / 2 + 1e-7).all()
    assert (layer.weight.abs().amax(dim=1) == 127).all()  # every channel uses its range


def test_int8_layer_computes_with_its_dequantized_weight():
    linear, layer = _layer(48, 64, "int8")
    x = torch.randn(3, 5, 64)
    dequantized = layer.weight.float() * layer.weight_scale[:, None]
    expected = x @ dequantized.t() + linear.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert (layer(x) - linear(x)).abs().max() < 0.05 * linear(x).abs().max()


@pytest.mark.parametrize("rows", [1, 5, 17, 40])
@pytest.mark.parametrize(("n", "k"), [(16, 64), (40, 100), (2100, 32)])
def test_triton_quant_kernel_equals_the_reference(rows, n, k):
    """Shapes off the tiles' multiples (N=40, K=100, rows=17) and both column tile widths."""
    pytest.importorskip("triton")
    from kpt.serve._triton_quant import int8_linear

    torch.manual_seed(rows + n + k)
    x = torch.randn(rows, k)
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    scale = torch.rand(n) / 127
    expected = (x @ weight.float().t()) * scale
    # On a GPU the kernel itself, in float32 (TF32 dots: a looser bound); else the interpreter.
    device, tolerance = ("cuda", 2e-2) if torch.cuda.is_available() else ("cpu", 1e-4)
    got = int8_linear(x.to(device), weight.to(device), scale.to(device)).cpu()
    assert torch.allclose(got, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(("n", "k"), [(3, 5000), (40, 100)])
def test_triton_widen_scales_every_weight_in_one_pass(n, k):
    """More weights than one program's block, and a row that crosses two blocks."""
    pytest.importorskip("triton")
    from kpt.serve._triton_quant import int8_widen

    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    scale = torch.rand(n) / 127
    device = "cuda" if torch.cuda.is_available() else "cpu"
    got = int8_widen(weight.to(device), scale.to(device), torch.float32).cpu()
    assert torch.allclose(got, weight.float() * scale[:, None], rtol=1e-6, atol=0)


@pytest.mark.parametrize("split", [2, 3, 8])
@pytest.mark.parametrize(("rows", "n", "k"), [(1, 40, 100), (17, 16, 256), (5, 2100, 48)])
def test_triton_quant_kernel_split_over_k_equals_the_reference(split, rows, n, k):
    """K split over programs whose partial sums a second launch adds: shares of whole K
    tiles, the last one short (K=100 in tiles of 32) or fewer shares than asked (K=48)."""
    pytest.importorskip("triton")
    from kpt.serve._triton_quant import int8_linear

    torch.manual_seed(split + rows + n + k)
    x = torch.randn(rows, k)
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    scale = torch.rand(n) / 127
    expected = (x @ weight.float().t()) * scale
    device, tolerance = ("cuda", 2e-2) if torch.cuda.is_available() else ("cpu", 1e-4)
    tiles = (16, 16, 32, 4, 2, split)
    got = int8_linear(x.to(device), weight.to(device), scale.to(device), tiles).cpu()
    assert torch.allclose(got, expected, rtol=tolerance, atol=tolerance)


def test_activation_quantizer_shares_one_activation_and_sees_in_place_changes():
    quantizer = ActivationQuantizer()
    fp8 = torch.float8_e4m3fn
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    first = quantizer(x, x, fp8)
    assert quantizer(x, x, fp8)[0] is first[0]  # q, k and v read one activation
    x.mul_(2)  # changed in place: quantized again
    again, top = quantizer(x, x, fp8)
    assert again is not first[0]
    assert torch.equal(top, x.float().abs().max())
    other = x.clone()
    assert quantizer(other, other, fp8)[0] is not again
    # Scaled to the format's range: the largest magnitude lands on 448, and nothing is lost
    # but rounding (e4m3 keeps 3 mantissa bits: within 1/16 relative, plus the subnormals).
    assert again.float().abs().max() == 448
    restored = again.float() * top / (448 / (1 + 2**-7))
    assert torch.allclose(restored, x.float(), rtol=1 / 16, atol=top.item() * 2**-9)


@pytest.mark.parametrize(("make", "per_block"), [(make_llama, 7), (make_gpt2, 4)])
def test_int8_engine_serves_from_a_checkpoint_with_its_layers_quantized(make, per_block, tmp_path):
    model_dir = make(tmp_path / "model", layers=2, width=64)
    full = LLM(model_dir, device="cpu", num_kv_blocks=32)
    quantized = LLM(model_dir, device="cpu", num_kv_blocks=32, quantization="int8")
    layers = {n: m for n, m in quantized.engine.runner.model.named_modules()
              if isinstance(m, QuantizedLinear)}  # fmt: skip
    assert len(layers) == 2 * per_block  # every linear layer of the blocks; the LM head stays
    assert isinstance(quantized.engine.runner.model.lm_head, nn.Linear)
    reference = dict(full.engine.runner.model.named_parameters())
    for name, layer in layers.items():
        w = reference[f"{name}.weight"]
        scale = w.abs().amax(dim=1) / 127
        assert torch.equal(layer.weight, (w / scale[:, None]).round().to(torch.int8))
        assert layer.weight.is_contiguous()  # GPT-2's Conv1D weights arrive transposed
    assert quantized.engine.weight_format == "int8"
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    outs = quantized.generate(random_prompts(3, 4, 10, seed=3), params)
    assert all(len(o.token_ids) == 6 for o in outs)


def test_quantized_weights_take_about_a_quarter_of_float32(tmp_path):
    model_dir = make_gpt2(tmp_path / "gpt2", layers=2, width=64)
    config = load_config(model_dir)
    full = model_bytes(config, torch.float32)
    int8 = model_bytes(config, torch.float32, "int8")
    with torch.device("meta"):
        from kpt.serve._models import MODEL_CLASSES

        model = MODEL_CLASSES[config.family](config)
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if type(m) is nn.Linear and not n.endswith("lm_head"))  # fmt: skip
    scales = sum(m.out_features for n, m in model.named_modules()
                 if type(m) is nn.Linear and not n.endswith("lm_head"))  # fmt: skip
    assert full - int8 == linear * 3 - scales * 4


def test_fp8_is_refused_where_the_device_does_not_offer_it(tmp_path):
    model_dir = make_gpt2(tmp_path / "gpt2", layers=1, width=32)
    with pytest.raises(ValueError, match="advertises fp8"):
        LLM(model_dir, device="cpu", num_kv_blocks=8, quantization="fp8")
    with pytest.raises(ValueError, match="not one of"):
        LLM(model_dir, device="cpu", num_kv_blocks=8, quantization="int4")


def test_variant_forms_name_a_dtype_a_quantization_or_both():
    from kpt.serve.fleet.quality import variant_form

    assert variant_form("bfloat16") == {"dtype": torch.bfloat16, "quantization": None}
    assert variant_form("int8") == {"dtype": None, "quantization": "int8"}
    assert variant_form("bfloat16/fp8") == {"dtype": torch.bfloat16, "quantization": "fp8"}
    with pytest.raises(ValueError, match="not a quantization"):
        variant_form("bfloat16/int4")
    with pytest.raises(ValueError, match="not a torch dtype"):
        variant_form("bf17/int8")


def test_int8_quality_against_float32_is_measured_with_an_interval(tmp_path):
    from kpt.serve.fleet.quality import variant_quality

    model_dir = make_llama(tmp_path / "llama", layers=2, width=64)
    report = variant_quality(
        model_dir, {"float32": "float32", "int8": "float32/int8"}, reference="float32",
        num_sequences=12, length=24,
    )  # fmt: skip
    reference, int8 = report["float32"], report["int8"]
    assert int8.quantization == "int8" and reference.quantization is None
    # Per-channel int8 moves a small model's log-likelihoods by well under a percent.
    assert abs(int8.perplexity / reference.perplexity - 1) < 0.01
    assert int8.agreement > 0.8
    lo, hi = int8.nll_vs_reference["ci"]
    assert lo <= int8.nll_vs_reference["effect"] <= hi


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("rows", [1, 16, 64, 300, 600])
@pytest.mark.parametrize("method", ["int8", "fp8"])
def test_quantized_layers_on_cuda_equal_the_reference(method, rows):
    """Triton's int8 kernel (up to MAX_ROWS: decodes, prompt chunks), the widened GEMM
    (longer prompts), and fp8's row-scaled torch._scaled_mm, each against the dequantized
    weights on the CPU."""
    if method == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("float8 GEMMs need compute capability 8.9")
    device = torch.device("cuda")
    torch.manual_seed(rows)
    linear = nn.Linear(512, 384, dtype=torch.bfloat16)
    layer = QuantizedLinear(linear, method, torch.bfloat16, device)
    layer.load_weight(linear.weight)
    layer.bias = nn.Parameter(linear.bias.detach().to(device))
    x = torch.randn(rows, 512, dtype=torch.bfloat16)
    on_device = x.to(device)
    got = layer(on_device).float().cpu()
    scale = layer.weight_scale.float().cpu()
    dequantized = layer.weight.float().cpu() * (scale.reshape(-1, 1) if method == "int8" else scale)
    if method == "int8":
        expected = x.float() @ dequantized.t()
    else:  # the float8 activation the layer used (kept for the next layer reading x)
        quantized, top = layer.activations(on_device, on_device, layer.weight.dtype)
        expected = (quantized.float().cpu() * top.cpu()) @ dequantized.t()
    expected += linear.bias.float()
    assert torch.allclose(got, expected, rtol=2e-2, atol=3e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("rows", [1, 3, 16, 300])
def test_fused_fp8_quantization_equals_pytorchs(rows):
    """Triton's quantization (one program up to four rows here, the chip-wide kernels above)
    against PyTorch's three launches. (Triton's CPU interpreter converts to float8 wrongly, so
    this runs on a GPU only.)"""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("float8 needs compute capability 8.9")
    x = torch.randn(rows, 4096, device="cuda", dtype=torch.bfloat16) * 3
    fused, fused_top = ActivationQuantizer(fused=True)(x, x, torch.float8_e4m3fn)
    plain, plain_top = ActivationQuantizer(fused=False)(x, x, torch.float8_e4m3fn)
    assert torch.equal(fused_top, plain_top)
    # PyTorch's addcdiv rounds to bfloat16 before the float8 copy rounds again: 2.2-7.4 % of
    # values one float8 step off the kernel's, never further.
    assert torch.allclose(fused.float(), plain.float(), rtol=1 / 8, atol=2**-9)
    # The kernel rounds once: against float64 scaling rounded once, only values within a few
    # float32 ulps of a halfway point may differ.
    reach = _fp8_reach(torch.float8_e4m3fn)
    once = (x.double() * (reach / fused_top.double())).to(torch.float8_e4m3fn)
    assert (fused.float() != once.float()).float().mean() < 0.005
