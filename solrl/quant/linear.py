"""Quantized execution of a model's GEMMs: QuantLinear and quantize_model with data-driven skip rules."""

from __future__ import annotations

import fnmatch
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from solrl.quant.formats import NVFP4_BLOCK, fake_quant, fake_quant_ste
from solrl.quant.fused import fused_fake_quant

QuantFormat = Literal["nvfp4", "fp8_e4m3", "bf16"]


class SkipRules(BaseModel):
    """Which GEMMs stay in high precision, as data (a model's config carries its own)."""

    model_config = ConfigDict(extra="forbid")
    name_patterns: list[str] = Field(
        default_factory=list, description="fnmatch patterns on the module's qualified name kept high precision, e.g. '*.proj_out'."
    )
    min_features: int = Field(default=0, ge=0, description="A GEMM whose smaller side (in or out features) is below this stays high precision.")
    min_dim: int = Field(
        default=0,
        ge=0,
        description="A GEMM whose larger side is at most this stays high precision (the Sol-RL reference's nvfp4_min_dim; 0: off).",
    )


class QuantRecipe(BaseModel):
    """What to quantize, in which format, on which backend."""

    model_config = ConfigDict(extra="forbid")
    format: QuantFormat = Field(default="nvfp4", description="Low-precision format of the explore copy.")
    backend: str = Field(default="emulated", description="emulated (exact numerics, any device), torchao or transformer_engine (GPU extras).")
    quantize_activations: bool = Field(default=True, description="Quantize GEMM inputs too, not only weights.")
    fused: bool = Field(
        default=True,
        description="Emulated backend: fake-quantize activations with a torch.compile'd function (bit-identical, faster); False: eager.",
    )
    skip: SkipRules = Field(default_factory=SkipRules, description="Which GEMMs stay in high precision.")


class QuantReport(BaseModel):
    """What quantize_model did: quantized module names and, for the rest, why not."""

    quantized: list[str] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)

    def summary(self) -> str:
        """One line: how many GEMMs were quantized and skipped."""
        return f"{len(self.quantized)} GEMMs quantized, {len(self.skipped)} kept in high precision"


class QuantLinear(nn.Module):
    """A Linear (or 1x1 Conv2d) whose weight is fake-quantized once per weight change and
    cached, and whose input is fake-quantized on every call.

    The cache is keyed on the weight's storage and autograd version counter, so in-place
    updates (optimizer steps, load_state_dict, copy_) trigger exactly one re-quantization.
    """

    def __init__(self, layer: nn.Linear | nn.Conv2d, fmt: QuantFormat = "nvfp4", quantize_activations: bool = True, fused: bool = False):
        super().__init__()
        if isinstance(layer, nn.Conv2d) and (layer.kernel_size != (1, 1) or layer.groups != 1):
            raise ValueError(f"QuantLinear takes 1x1 ungrouped convolutions only, got kernel {layer.kernel_size}")
        self.fmt = fmt
        self.quantize_activations = quantize_activations
        self.fused = fused
        self.is_conv = isinstance(layer, nn.Conv2d)
        self.conv_args = dict(stride=layer.stride, padding=layer.padding) if self.is_conv else {}
        self.weight = layer.weight
        self.bias = layer.bias
        self.weight_quantizations = 0
        self._cache_key: tuple | None = None
        self._weight_q: torch.Tensor | None = None

    def _matrix(self) -> torch.Tensor:
        return self.weight.reshape(self.weight.shape[0], -1)

    def quantized_weight(self) -> torch.Tensor:
        """The cached fake-quantized weight matrix, re-quantized only if the weight changed."""
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype, self.weight.device)
        if key != self._cache_key:
            with torch.no_grad():
                self._weight_q = fake_quant(self._matrix().detach(), self.fmt)
            self._cache_key = key
            self.weight_quantizations += 1
        return self._weight_q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Inference (the sampler's case) uses the cached weight; when gradients are wanted both
        # weight and input go through the straight-through estimator instead.
        training = torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad)
        if training:
            quant = lambda t: fake_quant_ste(t, self.fmt)  # noqa: E731
        else:
            quant = (lambda t: fused_fake_quant(t, self.fmt)) if self.fused else (lambda t: fake_quant(t, self.fmt))  # noqa: E731
        w = quant(self._matrix()) if training and self.weight.requires_grad else self.quantized_weight()
        w = w.to(x.dtype)
        if self.is_conv:
            # Channels are the reduction dimension of a 1x1 conv: quantize blocks along them.
            x = x.movedim(1, -1)
        if self.quantize_activations:
            x = quant(x)
        y = nn.functional.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))
        return y.movedim(-1, 1) if self.is_conv else y

    def extra_repr(self) -> str:
        out_f, in_f = self._matrix().shape
        return f"in={in_f}, out={out_f}, fmt={self.fmt}, conv1x1={self.is_conv}, fused={self.fused}"


def gemm_features(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a Linear or 1x1 Conv2d, None for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
        return module.in_channels, module.out_channels
    return None


def skip_reason(name: str, module: nn.Module, rules: SkipRules, fmt: str = "nvfp4") -> str | None:
    """Why the GEMM `name` stays in high precision under `rules`, or None to quantize it."""
    for pattern in rules.name_patterns:
        if fnmatch.fnmatchcase(name, pattern):
            return f"name matches skip pattern {pattern!r}"
    in_f, out_f = gemm_features(module)
    if min(in_f, out_f) < rules.min_features:
        return f"smallest side {min(in_f, out_f)} < min_features {rules.min_features}"
    if rules.min_dim and max(in_f, out_f) <= rules.min_dim:
        return f"largest side {max(in_f, out_f)} <= min_dim {rules.min_dim}"
    if fmt == "nvfp4" and in_f % NVFP4_BLOCK:
        return f"in_features {in_f} is not a multiple of the {NVFP4_BLOCK}-element block"
    return None


def quantize_model(model: nn.Module, recipe: QuantRecipe | None = None) -> QuantReport:
    """Swap every eligible GEMM of `model` for its backend's quantized layer, in place."""
    from solrl.quant.backends import get_backend

    recipe = recipe or QuantRecipe()
    backend = get_backend(recipe.backend)
    backend.check(recipe.format)
    report = QuantReport()
    targets = [(n, m) for n, m in model.named_modules() if n and gemm_features(m) is not None]
    for name, module in targets:
        reason = skip_reason(name, module, recipe.skip, recipe.format)
        if reason is not None:
            report.skipped[name] = reason
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, backend.make_linear(module, recipe))
        report.quantized.append(name)
    return report


def requantize_model(model: nn.Module) -> int:
    """Re-quantize every quantized layer's cached weight now (after a weight load); returns how many.
    Any backend layer with a `quantized_weight()` cache keyed by `_cache_key` takes part."""
    layers = [m for m in model.modules() if hasattr(m, "_cache_key") and callable(getattr(m, "quantized_weight", None))]
    for layer in layers:
        layer._cache_key = None
        layer.quantized_weight()
    return len(layers)
