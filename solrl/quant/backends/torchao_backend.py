"""torchao's NVFP4 / FP8 tensor subclasses as an alternative GPU backend: real FP4 GEMMs through
torch._scaled_mm on Blackwell, FP8 on Ada / Hopper.

The numerics are the emulated backend's recipe: NVFP4 weights with a per-tensor scale
amax / (6 * 448) and 16-element E4M3 block scales, activations quantized per call with a dynamic
per-tensor scale; FP8 E4M3 with per-tensor scales on both operands. Imported only when a config
chooses `quant.backend: torchao`.
"""

from __future__ import annotations

import torch
from torch import nn

from solrl.quant.backends import BackendUnavailable, require_cuda_capability

REQUIREMENTS = {"nvfp4": ((10, 0), "Blackwell, e.g. B200"), "fp8_e4m3": ((8, 9), "Ada or Hopper, e.g. L40S, H100")}


class TorchAOLinear(nn.Module):
    """A Linear whose weight is held as a torchao quantized tensor, rebuilt when the (merged)
    high-precision weight changes, so weight updates behave as with QuantLinear."""

    def __init__(self, layer: nn.Linear, fmt: str, quantize_activations: bool = True):
        super().__init__()
        if not isinstance(layer, nn.Linear):
            raise BackendUnavailable(f"quant backend 'torchao' quantizes nn.Linear only, not {type(layer).__name__}; skip it or use quant.backend=emulated")
        self.fmt, self.quantize_activations = fmt, quantize_activations
        self.weight, self.bias = layer.weight, layer.bias
        self._cache_key: tuple | None = None
        self._weight_q: torch.Tensor | None = None
        self.weight_quantizations = 0

    def quantized_weight(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype, self.weight.device)
        if key != self._cache_key:
            with torch.no_grad():
                self._weight_q = quantize_weight(self.weight.detach(), self.fmt, self.quantize_activations)
            self._cache_key = key
            self.weight_quantizations += 1
        return self._weight_q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = nn.functional.linear(x.reshape(-1, shape[-1]), self.quantized_weight(), None if self.bias is None else self.bias.to(x.dtype))
        return y.reshape(*shape[:-1], y.shape[-1])


def quantize_weight(w: torch.Tensor, fmt: str, quantize_activations: bool) -> torch.Tensor:
    """The torchao tensor subclass for one weight matrix (activation quantization rides on it)."""
    if fmt == "nvfp4":
        from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, QuantizeTensorToNVFP4Kwargs, per_tensor_amax_to_scale

        act = QuantizeTensorToNVFP4Kwargs(use_dynamic_per_tensor_scale=True) if quantize_activations else None
        return NVFP4Tensor.to_nvfp4(w, per_tensor_scale=per_tensor_amax_to_scale(w.abs().max()), act_quant_kwargs=act)
    from torchao.float8.inference import Float8MMConfig
    from torchao.quantization import PerTensor
    from torchao.quantization.quantize_.workflows.float8.float8_tensor import Float8Tensor, QuantizeTensorToFloat8Kwargs

    act = QuantizeTensorToFloat8Kwargs(granularity=PerTensor()) if quantize_activations else None
    # torchao's GEMM asserts an mm_config on the weight (torchao 0.18, seen on an H200); fast
    # accumulation is its own inference default, padding keeps widths off a multiple of 16 working
    mm = Float8MMConfig(use_fast_accum=True, pad_inner_dim=True)
    return Float8Tensor.from_hp(w, granularity=PerTensor(), mm_config=mm, act_quant_kwargs=act)


class TorchAOBackend:
    name = "torchao"

    def check(self, fmt: str) -> None:
        if fmt not in REQUIREMENTS:
            raise ValueError(f"quant.format {fmt!r} is not offered by torchao; choose one of {sorted(REQUIREMENTS)}")
        minimum, generation = REQUIREMENTS[fmt]
        try:
            import torchao  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                f"quant backend 'torchao' needs the torchao package (pip install 'solrl[torchao]') "
                f"and an NVIDIA GPU of compute capability >= {minimum[0]}.{minimum[1]} ({generation}) "
                f"for {fmt}: {exc}"
            ) from exc
        require_cuda_capability(self.name, fmt, minimum, generation)

    def make_linear(self, layer: nn.Module, recipe) -> nn.Module:
        self.check(recipe.format)
        return TorchAOLinear(layer, recipe.format, recipe.quantize_activations)
