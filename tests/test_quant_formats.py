"""NVFP4 / FP8 numerics: bit-identity with torchao's NVFP4Tensor, the published error figure,
edge cases and the straight-through gradient."""

import warnings

import pytest
import torch

from solrl.quant.formats import (
    E2M1_VALUES,
    fake_quant,
    fake_quant_ste,
    fp8_e4m3_dequantize,
    fp8_e4m3_fake_quant,
    fp8_e4m3_quantize,
    nvfp4_fake_quant,
    nvfp4_quantize,
    nvfp4_tensor_scale,
)
from solrl.quant.fused import fused_fake_quant

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _torchao(x):
    t = NVFP4Tensor.to_nvfp4(x.contiguous(), per_tensor_scale=per_tensor_amax_to_scale(x.abs().max()))
    return t, t.dequantize(x.dtype)


def _bits(x):
    return x.view({4: torch.int32, 2: torch.int16}[x.element_size()])


def _ties():
    # Block 0 pins the tensor scale to exactly 1.0 (amax 2688 = 6 * 448); in the blocks with amax 6
    # the block scale is exactly 1.0 too, so these inputs sit exactly on E2M1 midpoints.
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 2)
    return torch.cat([torch.tensor([2688.0] + [0.0] * 15), mids, -mids]).reshape(3, 16)


def _cases():
    g = torch.Generator().manual_seed(1234)
    return {
        "random": torch.randn(128, 512, generator=g),
        "random_bf16": torch.randn(64, 256, generator=g).bfloat16(),
        "random_3d": torch.randn(3, 16, 64, generator=g),
        "zero_blocks": torch.cat([torch.zeros(4, 32), torch.randn(4, 32, generator=g)], dim=1),
        "all_equal": torch.full((8, 64), 3.7),
        "all_equal_negative": torch.full((8, 64), -0.01),
        "tiny_subnormal": torch.randn(8, 64, generator=g) * 1e-40,
        "tiny_normal": torch.randn(8, 64, generator=g) * 1e-37,
        "huge": (torch.rand(8, 64, generator=g) * 2 - 1) * 3.3e38,
        "exact_ties": _ties(),
        "wide_range": torch.randn(16, 64, generator=g) * torch.logspace(-6, 6, 64),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_nvfp4_bit_identical_to_torchao(name):
    x = _cases()[name]
    ref, ref_deq = _torchao(x)
    q = nvfp4_quantize(x)
    assert torch.equal(q.codes, ref.qdata), "packed E2M1 codes differ"
    assert torch.equal(q.block_scales.view(torch.uint8), ref.scale.view(torch.uint8)), "E4M3 block scales differ"
    assert torch.equal(q.tensor_scale, ref.per_tensor_scale.float())
    assert torch.equal(_bits(q.dequantize()), _bits(ref_deq))
    assert torch.equal(_bits(nvfp4_fake_quant(x)), _bits(ref_deq))


def test_exact_ties_round_to_even():
    q = nvfp4_quantize(_ties())
    got = q.dequantize()[1:]
    expected = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0] * 2)
    assert torch.equal(got[0], expected)
    assert torch.equal(got[1], -expected)


def test_all_zero_tensor_quantizes_to_zeros():
    # torchao returns NaN here (its tensor scale is 0 / 0); solrl defines the answer as zeros.
    x = torch.zeros(4, 32)
    assert torch.isnan(_torchao(x)[1]).all()
    assert torch.equal(nvfp4_quantize(x).dequantize(), x)
    assert torch.equal(nvfp4_fake_quant(x), x)


def test_relative_error_on_standard_normal_matches_published_figure():
    x = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0))
    err = float((nvfp4_fake_quant(x) - x).norm() / x.norm())
    assert abs(err - 0.0951) <= 0.001, err


def test_dequantized_values_lie_on_the_nvfp4_grid():
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    q = nvfp4_quantize(x)
    scale = (q.tensor_scale * q.block_scales.float()).repeat_interleave(16, dim=-1)
    grid = torch.tensor(E2M1_VALUES)
    element = (q.dequantize() / scale).abs()
    # the dequantized product is rounded to fp32, so dividing back lands within an ulp of the grid
    nearest = grid[(element.unsqueeze(-1) - grid).abs().argmin(-1)]
    assert torch.allclose(element, nearest, rtol=2**-22, atol=0)


def test_last_dim_not_multiple_of_16_is_padded_not_rejected():
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(4))
    q = nvfp4_quantize(x)
    assert q.codes.shape == (5, 24) and q.block_scales.shape == (5, 3)
    padded = torch.nn.functional.pad(x, (0, 8))
    assert torch.equal(q.dequantize(), nvfp4_fake_quant(padded)[:, :40])
    assert nvfp4_fake_quant(x).shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nvfp4_device_and_dtype(device, dtype):
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(5)).to(device=device, dtype=dtype)
    y = nvfp4_fake_quant(x)
    assert y.dtype == dtype and y.device.type == device
    assert torch.equal(y.cpu(), nvfp4_fake_quant(x.cpu()))


def test_bad_dtype_is_named():
    with pytest.raises(TypeError, match="int64"):
        nvfp4_quantize(torch.ones(4, 16, dtype=torch.int64))


def test_fp8_matches_torch_float8_cast_and_saturates():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 64, generator=g) * 10
    q = fp8_e4m3_quantize(x)
    assert q.data.dtype == torch.float8_e4m3fn
    assert torch.equal(q.scale, x.abs().max() / 448.0)
    assert torch.equal(q.data.float(), (x / q.scale).to(torch.float8_e4m3fn).float())
    assert torch.equal(fp8_e4m3_dequantize(q), fp8_e4m3_fake_quant(x))
    assert float(fp8_e4m3_dequantize(q).abs().max()) == pytest.approx(float(x.abs().max()), rel=1e-6)
    # a given scale that is too small saturates at +-448 * scale instead of overflowing to NaN
    sat = fp8_e4m3_quantize(torch.tensor([1e6, -1e6]), scale=torch.tensor(1.0))
    assert torch.equal(sat.data.float(), torch.tensor([448.0, -448.0]))
    assert torch.equal(fp8_e4m3_fake_quant(torch.zeros(3)), torch.zeros(3))
    err = float((fp8_e4m3_fake_quant(x) - x).norm() / x.norm())
    assert 0.005 < err < 0.05


@pytest.mark.parametrize("fmt", ["nvfp4", "fp8_e4m3"])
def test_straight_through_gradient(fmt):
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(7), requires_grad=True)
    y = fake_quant_ste(x, fmt)
    assert not torch.equal(y, x)
    upstream = torch.randn(8, 32)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_fused_fake_quant_is_bit_identical_to_the_eager_one():
    """The torch.compile'd activation fake-quant (quant.fused) changes speed, never bits: on the
    shapes model's activation widths, odd row counts, exact ties, zeros and huge values."""
    from solrl.quant.fused import _broken, _verified, fused_fake_quant

    g = torch.Generator().manual_seed(8)
    cases = [
        torch.randn(37 * 74, 128, generator=g),
        torch.randn(5, 512, generator=g) * 1e3,
        torch.randn(3, 10, 64, generator=g),
        torch.tensor([[0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -6.0]]),
        torch.zeros(4, 32),
    ]
    for fmt in ("nvfp4", "bf16"):
        for x in cases:
            assert torch.equal(fused_fake_quant(x, fmt), fake_quant(x, fmt)), (fmt, x.shape)
    assert not _broken, _broken  # it compiled here; a fallback would make this test vacuous
    wrong = [key for key, ok in _verified.items() if not ok]
    if wrong:
        pytest.skip(f"bits held through the eager fallback: torch {torch.__version__} compiles {wrong} to other bits")


def test_a_compiled_fake_quant_that_changes_bits_is_caught_and_the_eager_one_used(monkeypatch):
    from solrl.quant import fused

    monkeypatch.setitem(fused._compiled, "bf16", lambda x: x)  # what torch 2.11 compiled the bf16 round trip to
    monkeypatch.setattr(fused, "_verified", {})
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(3))
    with pytest.warns(UserWarning, match="differs from the eager one"):
        y = fused.fused_fake_quant(x, "bf16")
    assert torch.equal(y, fake_quant(x, "bf16")) and not torch.equal(y, x)


def test_nan_anywhere_makes_the_whole_nvfp4_image_nan_as_in_torchao():
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(5))
    x[1, 7] = float("nan")
    ours = nvfp4_quantize(x)
    assert torch.isnan(ours.tensor_scale)  # not a made-up scale that quantizes the other rows wrongly
    assert torch.isnan(ours.dequantize(torch.float32)).all() and torch.isnan(_torchao(x)[1]).all()
    assert torch.isnan(nvfp4_fake_quant(x)).all() and torch.isnan(fused_fake_quant(x, "nvfp4")).all()


@pytest.mark.parametrize("amax", [1e-44, 1e-45])
def test_an_amax_that_underflows_the_tensor_scale_gives_zeros_not_nan(amax):
    x = torch.zeros(2, 16)
    x[0, 0], x[1, 3] = amax, -amax
    assert nvfp4_tensor_scale(x.abs().amax()) == 0  # the scale itself underflowed
    for out in (nvfp4_quantize(x).dequantize(torch.float32), nvfp4_fake_quant(x), fused_fake_quant(x, "nvfp4")):
        assert torch.isfinite(out).all() and not out.any()
