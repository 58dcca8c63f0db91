"""The reference backend: exact NVFP4 / FP8 numerics by fake-quantization in pure torch, on any device."""

from __future__ import annotations

from torch import nn

from solrl.quant.formats import FAKE_QUANT


class EmulatedBackend:
    name = "emulated"

    def check(self, fmt: str) -> None:
        if fmt not in FAKE_QUANT:
            raise ValueError(f"quant.format {fmt!r} is unknown to the emulated backend; choose one of {sorted(FAKE_QUANT)}")

    def make_linear(self, layer: nn.Module, recipe) -> nn.Module:
        from solrl.quant.linear import QuantLinear

        return QuantLinear(layer, recipe.format, recipe.quantize_activations, recipe.fused)
