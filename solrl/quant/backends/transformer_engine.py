"""NVIDIA Transformer Engine: real NVFP4 GEMMs (NVFP4BlockScaling) on Blackwell, FP8 (current
per-tensor scaling) on Ada / Hopper.

Each quantized layer is a `te.Linear` sharing the original layer's weight and bias, run inside
`te.fp8_autocast` with the format's recipe. TE quantizes the weight on every call, so in-place
weight merges need no cache invalidation. Imported only when a config chooses
`quant.backend: transformer_engine`.
"""

from __future__ import annotations

from torch import nn

from solrl.quant.backends import BackendUnavailable, require_cuda_capability

# format -> (minimum compute capability, the GPU generation that has it)
REQUIREMENTS = {"nvfp4": ((10, 0), "Blackwell, e.g. B200"), "fp8_e4m3": ((8, 9), "Ada or Hopper, e.g. L40S, H100")}


def te_recipe(fmt: str):
    """The Transformer Engine recipe for a format."""
    from transformer_engine.common import recipe

    return recipe.NVFP4BlockScaling() if fmt == "nvfp4" else recipe.Float8CurrentScaling()


class TELinear(nn.Module):
    """A te.Linear over the original layer's parameters, run under the format's autocast."""

    def __init__(self, layer: nn.Linear, fmt: str):
        super().__init__()
        import transformer_engine.pytorch as te

        if not isinstance(layer, nn.Linear):
            raise BackendUnavailable(f"quant backend 'transformer_engine' quantizes nn.Linear only, not {type(layer).__name__}")
        self.te = te
        self.recipe = te_recipe(fmt)
        self.linear = te.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                params_dtype=layer.weight.dtype, device=layer.weight.device)
        # Share storage: a weight merge into the original parameter is what TE multiplies with.
        self.linear.weight = layer.weight
        if layer.bias is not None:
            self.linear.bias = layer.bias

    def forward(self, x):
        shape = x.shape
        with self.te.fp8_autocast(enabled=True, fp8_recipe=self.recipe):
            y = self.linear(x.reshape(-1, shape[-1]))
        return y.reshape(*shape[:-1], y.shape[-1])


class TransformerEngineBackend:
    name = "transformer_engine"

    def check(self, fmt: str) -> None:
        if fmt not in REQUIREMENTS:
            raise ValueError(f"quant.format {fmt!r} is not offered by transformer_engine; choose one of {sorted(REQUIREMENTS)}")
        minimum, generation = REQUIREMENTS[fmt]
        try:
            import transformer_engine.pytorch  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                f"quant backend 'transformer_engine' needs the transformer-engine package "
                f"(pip install 'solrl[transformer-engine]') and an NVIDIA GPU of compute capability "
                f">= {minimum[0]}.{minimum[1]} ({generation}) for {fmt}: {exc}"
            ) from exc
        require_cuda_capability(self.name, fmt, minimum, generation)

    def make_linear(self, layer: nn.Module, recipe) -> nn.Module:
        self.check(recipe.format)
        if not recipe.quantize_activations:
            raise BackendUnavailable("quant backend 'transformer_engine' always quantizes activations; set quant.quantize_activations=true or use torchao / emulated")
        return TELinear(layer, recipe.format)
