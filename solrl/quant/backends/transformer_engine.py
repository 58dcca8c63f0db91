"""NVIDIA Transformer Engine: real NVFP4 GEMMs (NVFP4BlockScaling) on Blackwell, FP8 on Ada/Hopper.

Imported only when a config chooses `quant.backend: transformer_engine`.
"""

from __future__ import annotations

from torch import nn

from solrl.quant.backends import BackendUnavailable, require_cuda_capability

# format -> (minimum compute capability, the GPU generation that has it)
REQUIREMENTS = {"nvfp4": ((10, 0), "Blackwell, e.g. B200"), "fp8_e4m3": ((8, 9), "Ada or Hopper, e.g. L40S, H100")}


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
        raise BackendUnavailable(
            "quant backend 'transformer_engine': the GEMM path is not built yet (issue 5, GPU "
            "precision backends); use quant.backend=emulated"
        )
