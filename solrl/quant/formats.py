"""Number formats: NVFP4 (E2M1 elements, 16-element blocks, E4M3 block scales, fp32 tensor
scale) and FP8 E4M3 with a per-tensor scale, as quantize / dequantize / fake-quant in pure torch.

The NVFP4 arithmetic follows the two-level scaling recipe in the same operation order as
torchao's NVFP4Tensor (per-tensor scale mode), so both produce identical bits. Deliberate
differences, on inputs where torchao's answer is not a quantization of the input (measured with
torchao 0.18 on CPU, tests/test_quant_formats.py): an all-zero tensor quantizes to zeros (torchao:
NaN, its tensor scale being 0 / 0), and a zero element of a tensor whose amax is so small that
1 / tensor_scale overflows quantizes to zero (torchao: a tiny nonzero value). A tensor whose amax
underflows the tensor scale to zero quantizes to zeros. NaN anywhere in a tensor makes its whole
NVFP4 image NaN, as in torchao: the tensor scale is taken from the NaN amax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

E2M1_MAX = 6.0
E4M3_MAX = 448.0
# Smallest normal E4M3 value: block scales are clamped here, as NVIDIA's recipe does.
E4M3_MIN_NORMAL = 2.0**-6
NVFP4_BLOCK = 16

# The eight E2M1 magnitudes in code order; codes 8..15 are their negatives.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_E2M1_LUT = torch.tensor(E2M1_VALUES + tuple(-v for v in E2M1_VALUES), dtype=torch.float32)


@dataclass(frozen=True)
class NVFP4Quantized:
    """An NVFP4 tensor: packed E2M1 codes, E4M3 block scales and one fp32 tensor scale."""

    codes: torch.Tensor  # uint8, two codes per byte (element 2i in the low nibble), (..., K/2)
    block_scales: torch.Tensor  # float8_e4m3fn, (..., K/16)
    tensor_scale: torch.Tensor  # fp32 scalar
    shape: torch.Size  # shape of the original tensor (last dim may be unpadded)
    dtype: torch.dtype  # dtype of the original tensor

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The high-precision tensor these codes and scales represent."""
        return nvfp4_dequantize(self, dtype)


def nvfp4_tensor_scale(amax: torch.Tensor) -> torch.Tensor:
    """Per-tensor fp32 scale amax / (6 * 448), so the largest block scale lands on E4M3's max."""
    amax = amax.to(torch.float32)
    # An all-zero tensor has no scale; any positive one quantizes it to exact zeros. A NaN amax
    # stays NaN, so a tensor holding NaN dequantizes to NaN throughout, as torchao's does.
    return torch.where(amax == 0, torch.ones_like(amax), amax / (E4M3_MAX * E2M1_MAX))


def _e2m1_step(m: torch.Tensor) -> torch.Tensor:
    """The E2M1 grid spacing at fp32 m (|m| <= 6): 0.5 below 2, 1 on [2, 4), 2 on [4, 6].

    That is 2^(floor(log2|m|) - 1), at least 0.5, read straight off m's exponent bits: two
    integer passes instead of nested torch.where, which dominated emulated NVFP4's cost.
    """
    bits = m.view(torch.int32) & 0x7F800000  # 2^floor(log2|m|): the exponent bits alone
    bits.sub_(1 << 23)  # halve it; zero and subnormals wrap to -inf, which the clamp lifts to 0.5
    return bits.view(torch.float32).clamp_(min=0.5)


def _e2m1_round(m: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 value to fp32 m in [-6, 6], ties to even, sign kept.

    Dividing by the power-of-two spacing is exact and torch.round rounds half to even, so this
    is exactly E2M1's rounding. (At a boundary such as 1.75 the tie lands on 2.0 either way:
    1.75 / 0.5 = 3.5 rounds to 4.)
    """
    step = _e2m1_step(m)
    return (m / step).round_().mul_(step)


def _e2m1_code(magnitude: torch.Tensor) -> torch.Tensor:
    """Code 0..7 of an E2M1 magnitude (0, 0.5, 1, 1.5 -> 0..3; 2, 3 -> 4, 5; 4, 6 -> 6, 7)."""
    m = magnitude
    return torch.where(m < 2.0, m * 2, torch.where(m < 4.0, m + 2, m / 2 + 4)).to(torch.uint8)


def _nvfp4_scaled_blocks(x: torch.Tensor, tensor_scale: torch.Tensor | None):
    """Blocks of x scaled into E2M1 range, their E4M3 block scales, and the tensor scale."""
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"NVFP4 quantize: dtype {x.dtype} is not supported; pass fp32, bf16 or fp16")
    if x.dim() == 0:
        raise ValueError("NVFP4 quantize: a 0-d tensor has no block dimension; pass at least 1-d")
    k = x.shape[-1]
    x32 = x.float()
    if k % NVFP4_BLOCK:
        # Zero padding leaves every block's amax, and so every real element, unchanged.
        x32 = torch.nn.functional.pad(x32, (0, NVFP4_BLOCK - k % NVFP4_BLOCK))
    blocks = x32.reshape(*x32.shape[:-1], -1, NVFP4_BLOCK)
    block_amax = blocks.abs().amax(dim=-1)
    if tensor_scale is None:
        tensor_scale = nvfp4_tensor_scale(block_amax.amax())
    tensor_scale = tensor_scale.to(device=x.device, dtype=torch.float32)
    # A tensor scale that underflowed to zero (amax below about 4e-42): every value is far below
    # NVFP4's smallest step, so the tensor quantizes to zeros instead of dividing 0 by 0.
    underflow = tensor_scale == 0
    blocks = torch.where(underflow, torch.zeros_like(blocks), blocks)
    block_amax = torch.where(underflow, torch.zeros_like(block_amax), block_amax)
    divisor = torch.where(underflow, torch.ones_like(tensor_scale), tensor_scale)
    scales_fp8 = torch.clamp(block_amax / E2M1_MAX / divisor, min=E4M3_MIN_NORMAL, max=E4M3_MAX).to(torch.float8_e4m3fn)
    # Multiply by the reciprocal of the combined scale, in torchao's order, for identical bits.
    reciprocal = (1.0 / divisor) / scales_fp8.float()
    # inf * 0 happens when the tensor scale is subnormal-small: zeros stay zero. Always applied (it
    # changes no other value), since a data-dependent branch would break the compiled graph in two.
    scaled = torch.where(blocks == 0, blocks, blocks * reciprocal.unsqueeze(-1))
    scaled = scaled.clamp_(-E2M1_MAX, E2M1_MAX)
    return scaled, scales_fp8, tensor_scale


def nvfp4_quantize(x: torch.Tensor, tensor_scale: torch.Tensor | None = None) -> NVFP4Quantized:
    """Quantize x to NVFP4 along its last dimension (padded with zeros to a multiple of 16)."""
    scaled, scales_fp8, tensor_scale = _nvfp4_scaled_blocks(x, tensor_scale)
    codes = _e2m1_code(_e2m1_round(scaled).abs_())
    codes |= torch.signbit(scaled).to(torch.uint8) << 3
    codes = codes.reshape(*codes.shape[:-2], -1)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return NVFP4Quantized(packed, scales_fp8, tensor_scale, x.shape, x.dtype)


def unpack_e2m1_codes(packed: torch.Tensor) -> torch.Tensor:
    """Split each byte into its two 4-bit codes (low nibble first)."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(*packed.shape[:-1], -1)


def nvfp4_dequantize(q: NVFP4Quantized, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Codes times block scale times tensor scale, cropped to the original shape."""
    codes = unpack_e2m1_codes(q.codes)
    values = _E2M1_LUT.to(codes.device)[codes.long()]
    values = values.reshape(*values.shape[:-1], -1, NVFP4_BLOCK)
    scales = q.tensor_scale * q.block_scales.float()
    out = (values * scales.unsqueeze(-1)).reshape(*values.shape[:-2], -1)
    return out[..., : q.shape[-1]].to(dtype or q.dtype)


def nvfp4_fake_quant(x: torch.Tensor, tensor_scale: torch.Tensor | None = None) -> torch.Tensor:
    """dequantize(quantize(x)) without packing: the value NVFP4 arithmetic would see."""
    scaled, scales_fp8, tensor_scale = _nvfp4_scaled_blocks(x, tensor_scale)
    values = _e2m1_round(scaled)
    scales = tensor_scale * scales_fp8.float()
    out = (values * scales.unsqueeze(-1)).reshape(*values.shape[:-2], -1)
    return out[..., : x.shape[-1]].to(x.dtype)


@dataclass(frozen=True)
class FP8Quantized:
    """An FP8 E4M3 tensor with one fp32 scale."""

    data: torch.Tensor  # float8_e4m3fn
    scale: torch.Tensor  # fp32 scalar
    dtype: torch.dtype

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The high-precision tensor this FP8 tensor represents."""
        return fp8_e4m3_dequantize(self, dtype)


def fp8_e4m3_quantize(x: torch.Tensor, scale: torch.Tensor | None = None) -> FP8Quantized:
    """Per-tensor scaled FP8 E4M3 (amax maps to 448), round to nearest even, saturating."""
    if scale is None:
        amax = x.detach().abs().amax().float()
        scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    scale = scale.to(device=x.device, dtype=torch.float32)
    data = torch.clamp(x.float() / scale, -E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return FP8Quantized(data, scale, x.dtype)


def fp8_e4m3_dequantize(q: FP8Quantized, dtype: torch.dtype | None = None) -> torch.Tensor:
    """FP8 values times their scale."""
    return (q.data.float() * q.scale).to(dtype or q.dtype)


def fp8_e4m3_fake_quant(x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """dequantize(quantize(x)) in x's dtype."""
    return fp8_e4m3_dequantize(fp8_e4m3_quantize(x, scale))


def bf16_fake_quant(x: torch.Tensor) -> torch.Tensor:
    """Round to bfloat16 and back: a BF16 GEMM operand, emulated in x's dtype."""
    return x.to(torch.bfloat16).to(x.dtype)


FAKE_QUANT = {"nvfp4": nvfp4_fake_quant, "fp8_e4m3": fp8_e4m3_fake_quant, "bf16": bf16_fake_quant}


def fake_quant(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Fake-quantize x in the named format ('nvfp4' or 'fp8_e4m3')."""
    try:
        fn = FAKE_QUANT[fmt]
    except KeyError:
        raise ValueError(f"quant format {fmt!r} is unknown; choose one of {sorted(FAKE_QUANT)}") from None
    return fn(x)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, fmt: str) -> torch.Tensor:
        return fake_quant(x, fmt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def fake_quant_ste(x: torch.Tensor, fmt: str = "nvfp4") -> torch.Tensor:
    """Fake-quant in the forward pass, identity in the backward pass (straight-through)."""
    return _StraightThrough.apply(x, fmt)
