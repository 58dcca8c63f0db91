"""QuantLinear caching, quantize_model's data-driven skip rules, and the backend registry."""

import pytest
import torch
from torch import nn

from solrl.quant import QuantLinear, QuantRecipe, SkipRules, nvfp4_fake_quant, quantize_model, requantize_model
from solrl.quant.backends import BackendUnavailable, available_backends, get_backend


def _linear(in_f=64, out_f=32, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f)


def test_quantlinear_matches_fake_quant_matmul():
    layer = _linear()
    q = QuantLinear(layer, "nvfp4")
    x = torch.randn(5, 7, 64)
    expected = nn.functional.linear(nvfp4_fake_quant(x), nvfp4_fake_quant(layer.weight.detach()), layer.bias)
    assert torch.equal(q(x), expected)


def test_weight_quantized_once_per_weight_update():
    layer = _linear()
    q = QuantLinear(layer, "nvfp4")
    x = torch.randn(4, 64)
    layer.weight.requires_grad_(False)  # a sampler's copy is frozen
    for _ in range(3):
        q(x)
    assert q.weight_quantizations == 1
    with torch.no_grad():
        before = q(x)
        # an in-place weight update (a weight sync, an optimizer step): one re-quantization follows
        q.weight.mul_(1.5)
        after = q(x)
        q(x)
    assert q.weight_quantizations == 2
    assert not torch.equal(before, after)
    # so does a state-dict load
    q.load_state_dict({"weight": torch.randn(32, 64), "bias": torch.zeros(32)})
    with torch.no_grad():
        q(x)
        q(x)
    assert q.weight_quantizations == 3
    assert requantize_model(nn.Sequential(q)) == 1 and q.weight_quantizations == 4


def test_gradients_flow_straight_through():
    layer = _linear()
    q = QuantLinear(layer, "nvfp4")
    x = torch.randn(4, 64, requires_grad=True)
    q(x).sum().backward()
    # d/dx of sum(x_q W_q^T) through the STE is the column sum of the quantized weight
    assert torch.allclose(x.grad, q.quantized_weight().sum(0).expand(4, 64))
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_weights_only_recipe_leaves_activations_exact():
    layer = _linear()
    q = QuantLinear(layer, "fp8_e4m3", quantize_activations=False)
    x = torch.randn(3, 64)
    w = q.quantized_weight()
    assert torch.equal(q(x), nn.functional.linear(x, w, layer.bias))


def test_conv1x1_quantizes_like_a_linear_over_channels():
    torch.manual_seed(1)
    conv = nn.Conv2d(32, 16, kernel_size=1)
    lin = nn.Linear(32, 16)
    lin.weight.data = conv.weight.data.reshape(16, 32).clone()
    lin.bias.data = conv.bias.data.clone()
    x = torch.randn(2, 32, 5, 5)
    y_conv = QuantLinear(conv, "nvfp4")(x)
    y_lin = QuantLinear(lin, "nvfp4")(x.movedim(1, -1)).movedim(-1, 1)
    assert torch.allclose(y_conv, y_lin, atol=1e-6)
    with pytest.raises(ValueError, match="1x1"):
        QuantLinear(nn.Conv2d(8, 8, 3), "nvfp4")


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 64)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64)) for _ in range(2)])
        self.small = nn.Linear(64, 8)
        self.odd = nn.Linear(40, 64)
        self.point = nn.Conv2d(64, 64, 1)
        self.spatial = nn.Conv2d(64, 64, 3)
        self.norm = nn.LayerNorm(64)
        self.final = nn.Linear(64, 16)


def test_quantize_model_applies_skip_rules_and_reports():
    net = _Net()
    recipe = QuantRecipe(skip=SkipRules(name_patterns=["embed", "final"], min_features=16))
    report = quantize_model(net, recipe)
    assert sorted(report.quantized) == ["blocks.0.0", "blocks.0.2", "blocks.1.0", "blocks.1.2", "point"]
    assert set(report.skipped) == {"embed", "final", "small", "odd"}
    assert "skip pattern 'embed'" in report.skipped["embed"]
    assert "min_features 16" in report.skipped["small"]
    assert "multiple of the 16-element block" in report.skipped["odd"]
    assert isinstance(net.blocks[0][0], QuantLinear) and isinstance(net.point, QuantLinear)
    assert isinstance(net.embed, nn.Linear) and isinstance(net.spatial, nn.Conv2d)
    assert report.summary() == "5 GEMMs quantized, 4 kept in high precision"


def test_min_dim_keeps_gemms_whose_larger_side_is_at_most_it():
    """The Sol-RL reference's rule: max(in, out) <= nvfp4_min_dim stays high precision."""
    report = quantize_model(_Net(), QuantRecipe(skip=SkipRules(min_dim=64)))
    # every 64-wide GEMM stays; none is larger than 64, so nothing is quantized
    assert report.quantized == [] and "largest side 64 <= min_dim 64" in report.skipped["blocks.0.0"]
    report = quantize_model(_Net(), QuantRecipe(skip=SkipRules(min_dim=63)))
    assert "blocks.0.0" in report.quantized and "embed" in report.quantized


def test_quantized_model_keeps_sharing_parameters():
    net = _Net()
    weight = net.blocks[0][0].weight
    quantize_model(net, QuantRecipe())
    assert net.blocks[0][0].weight is weight


def test_recipe_rejects_unknown_fields_and_formats():
    with pytest.raises(ValueError, match="skip_patterns"):
        QuantRecipe(skip_patterns=["x"])
    with pytest.raises(ValueError, match="format"):
        QuantRecipe(format="int4")


def test_backend_registry():
    assert available_backends() == ["emulated", "torchao", "transformer_engine"]
    assert get_backend("emulated").name == "emulated"
    with pytest.raises(ValueError, match="quant backend 'tensorrt' is unknown.*emulated"):
        get_backend("tensorrt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without a GPU")
def test_transformer_engine_fails_with_package_and_gpu_generation():
    backend = get_backend("transformer_engine")  # importing the entry must not import the package
    with pytest.raises(BackendUnavailable) as err:
        backend.check("nvfp4")
    message = str(err.value)
    assert "transformer-engine" in message and "10.0" in message and "Blackwell" in message
    with pytest.raises(BackendUnavailable, match=r"8\.9.*Hopper"):
        backend.check("fp8_e4m3")
    with pytest.raises(BackendUnavailable):
        quantize_model(_Net(), QuantRecipe(backend="transformer_engine"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without a GPU")
def test_torchao_backend_fails_naming_the_gpu_generation():
    # torchao is installed here (the test extra), so the missing piece is the GPU.
    with pytest.raises(BackendUnavailable, match=r"torchao.*10\.0.*Blackwell.*no CUDA device"):
        get_backend("torchao").check("nvfp4")
