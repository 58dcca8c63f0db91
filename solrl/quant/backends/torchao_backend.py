"""torchao's NVFP4 / FP8 tensor subclasses as an alternative GPU backend.

Imported only when a config chooses `quant.backend: torchao`.
"""

from __future__ import annotations

from torch import nn

from solrl.quant.backends import BackendUnavailable, require_cuda_capability

REQUIREMENTS = {"nvfp4": ((10, 0), "Blackwell, e.g. B200"), "fp8_e4m3": ((8, 9), "Ada or Hopper, e.g. L40S, H100")}


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
        raise BackendUnavailable(
            "quant backend 'torchao': the GEMM path is not built yet (issue 5, GPU precision "
            "backends); use quant.backend=emulated"
        )
