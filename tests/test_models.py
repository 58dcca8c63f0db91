"""The PolicyModel contract on the tiny diffusers model: adapters, reference, merged copies."""

import pytest
import torch

from solrl.models.base import OLD, POLICY, Conditioning, PolicyModel, Sampleable
from solrl.models.tiny import TinyPolicyModel
from solrl.quant import QuantLinear
from solrl.sampling import SamplingConfig, sample


@pytest.fixture()
def model():
    return TinyPolicyModel(size=8, width=32, layers=1)


def _perturb(state, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in state.items()}


def _inputs(model, n=3):
    cond = model.encode_prompts(["a red circle", "two blue squares", "a cat"][:n])
    x = torch.randn(n, *model.sample_shape, generator=torch.Generator().manual_seed(1))
    return x, torch.full((n,), 0.6), cond


def test_tiny_model_meets_the_protocol(model):
    assert isinstance(model, PolicyModel) and isinstance(model, Sampleable)
    x, t, cond = _inputs(model)
    assert isinstance(cond, Conditioning) and len(cond) == 3
    v = model.velocity(x, t, cond)
    assert v.shape == x.shape
    images = model.decode(torch.randn(3, *model.sample_shape) * 3)
    assert images.shape == (3, 3, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_adapters_start_equal_and_are_independent(model):
    x, t, cond = _inputs(model)
    ref = model.velocity(x, t, cond, adapter=None)
    assert torch.equal(model.velocity(x, t, cond, adapter=POLICY), ref)  # LoRA B starts at zero
    model.load_adapter_state(_perturb(model.adapter_state(POLICY)), POLICY)
    v_policy = model.velocity(x, t, cond, adapter=POLICY)
    assert not torch.allclose(v_policy, ref)
    assert torch.equal(model.velocity(x, t, cond, adapter=OLD), ref)
    assert torch.equal(model.velocity(x, t, cond, adapter=None), ref)
    # switching adapters must leave the policy trainable and the old policy frozen
    assert all(p.requires_grad for p in model.adapter_parameters(POLICY).values())
    assert not any(p.requires_grad for p in model.adapter_parameters(OLD).values())
    assert not any(p.requires_grad for n, p in model.transformer.named_parameters() if "lora" not in n)


def test_adapter_state_round_trip_and_mismatch(model):
    state = _perturb(model.adapter_state(), seed=3)
    model.load_adapter_state(state, OLD)
    got = model.adapter_state(OLD)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    with pytest.raises(KeyError, match="does not match adapter 'old'"):
        model.load_adapter_state({"nope.lora_A.weight": torch.zeros(1)}, OLD)
    with pytest.raises(ValueError, match="adapter 'ema' is unknown"):
        model.velocity(*_inputs(model), adapter="ema")


def test_fp32_inference_copy_equals_the_adapter_it_merged(model):
    model.load_adapter_state(_perturb(model.adapter_state(), seed=4), OLD)
    x, t, cond = _inputs(model)
    copy = model.inference_copy("fp32", adapter=OLD)
    assert torch.allclose(copy.velocity(x, t, cond), model.velocity(x, t, cond, adapter=OLD), atol=1e-5)
    assert not any("lora" in n for n, _ in copy.named_parameters())
    assert copy.transformer is not model.transformer
    base = model.inference_copy("fp32", adapter=None)
    assert torch.allclose(base.velocity(x, t, cond), model.velocity(x, t, cond, adapter=None), atol=1e-6)


def test_update_adapter_remerges_and_requantizes_once(model):
    x, t, cond = _inputs(model)
    copy = model.inference_copy("nvfp4", adapter=OLD)
    layers = [m for m in copy.transformer.modules() if isinstance(m, QuantLinear)]
    assert layers and copy.quant_report.quantized and "proj_out" in copy.quant_report.skipped
    copy.velocity(x, t, cond)
    copy.velocity(x, t, cond)
    counts = [m.weight_quantizations for m in layers]
    assert counts == [1] * len(layers)
    new = _perturb(model.adapter_state(), seed=5, scale=0.2)
    before = copy.velocity(x, t, cond)
    copy.update_adapter(new, version=7)
    after = copy.velocity(x, t, cond)
    copy.velocity(x, t, cond)
    assert copy.version == 7 and not torch.equal(before, after)
    # only the layers the adapter touches were re-quantized, each exactly once
    touched = {p for p in copy._base}
    for name, m in copy.transformer.named_modules():
        if isinstance(m, QuantLinear):
            assert m.weight_quantizations == (2 if name in touched else 1), name
    # and the merged copy tracks the policy it came from
    model.load_adapter_state(new, OLD)
    reference = model.inference_copy("nvfp4", adapter=OLD)
    assert torch.equal(after, reference.velocity(x, t, cond))


@pytest.mark.parametrize("precision", ["bf16", "nvfp4", "fp8_e4m3"])
def test_low_precision_copies_stay_close(model, precision):
    cond = model.encode_prompts(["a red circle"] * 4)
    cfg = SamplingConfig(steps=6)
    ref = sample(model.inference_copy("fp32"), cond, [1, 2, 3, 4], cfg)
    low = sample(model.inference_copy(precision), cond, [1, 2, 3, 4], cfg)
    spread = (ref[0] - ref[1]).abs().mean()
    assert (low - ref).abs().mean() < 0.5 * spread


def test_unknown_precision_is_named(model):
    with pytest.raises(ValueError, match="precision 'int8' is unknown"):
        model.inference_copy("int8")


def test_shapes_model_sample_prediction_derives_the_velocity_and_survives_a_save(tmp_path):
    from solrl.models.sd3_pixel import sd3_forward
    from solrl.models.shapes import MIN_T, ShapesArchitecture, ShapesModel

    arch = ShapesArchitecture(patch_size=4, layers=1, heads=2, head_dim=8, text_dim=32, text_layers=1, prediction="sample")
    ShapesModel.from_scratch(arch, ["a", "red", "circle"]).save_pretrained(tmp_path / "m")
    model = ShapesModel.from_pretrained(tmp_path / "m")  # with adapters, as training loads it
    assert model.prediction == "sample"
    cond = model.encode_prompts(["a red circle", "a circle"])
    x = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.6, 0.01])  # the second is below the floor
    with torch.no_grad():
        x0_hat = sd3_forward(model.transformer, x, t, cond)
        v = model.velocity(x, t, cond, adapter=None)
        torch.testing.assert_close(model.inference_copy("fp32", adapter=None).velocity(x, t, cond), v)
    torch.testing.assert_close(v[0], (x[0] - x0_hat[0]) / 0.6)
    torch.testing.assert_close(v[1], (x[1] - x0_hat[1]) / MIN_T)
    # one Euler step from t to 0 lands on the predicted clean image
    torch.testing.assert_close(x[0] - 0.6 * v[0], x0_hat[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="prediction='x0'"):
        ShapesModel(model.transformer, model.text_encoder, model.tokenizer, prediction="x0")


@pytest.mark.parametrize("layer", ["linear", "conv1x1", "conv3x3"])
def test_the_merged_lora_delta_equals_peft_for_linear_and_conv_targets(layer):
    """Merged inference copies add scaling * B A to the base weight; for Conv2d targets (SANA's
    1x1 convs, which peft and the config accept) B A must be shaped and composed as peft does."""
    from peft import LoraConfig, inject_adapter_in_model

    from solrl.models.lora_policy import lora_delta

    torch.manual_seed(0)
    base = {"linear": torch.nn.Linear(12, 10), "conv1x1": torch.nn.Conv2d(12, 10, 1), "conv3x3": torch.nn.Conv2d(12, 10, 3, padding=1)}[layer]
    model = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["0"]), torch.nn.Sequential(base))
    lora = model[0]
    torch.nn.init.normal_(lora.lora_B["default"].weight)  # peft starts B at zero; any B will do
    expected = lora.get_delta_weight("default")
    a, b = lora.lora_A["default"].weight, lora.lora_B["default"].weight
    assert torch.allclose(lora.scaling["default"] * lora_delta(a, b), expected, atol=1e-6)


def test_cudnn_attention_false_turns_cudnn_attention_off_where_the_model_is_built():
    """model.cudnn_attention=false: the workaround for cuDNN's attention backward failing on
    FLUX.1's shapes under torch 2.11+cu130 (seen on an H200), applied in every process that builds
    a policy (samplers, learner ranks, the local run all go through build_policy)."""
    from solrl.builders import build_policy
    from solrl.config import ModelConfig

    assert torch.backends.cuda.cudnn_sdp_enabled()
    try:
        build_policy(ModelConfig(cudnn_attention=False, device="cpu"))
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)
