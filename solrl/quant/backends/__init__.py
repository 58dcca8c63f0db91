"""Precision backends by name. Only `emulated` is imported eagerly; the GPU backends import
their packages the first time a config chooses them."""

from __future__ import annotations

import importlib
from typing import Protocol

from torch import nn

# name -> "module:attribute", imported on first use so optional packages stay optional.
_REGISTRY: dict[str, str] = {
    "emulated": "solrl.quant.backends.emulated:EmulatedBackend",
    "transformer_engine": "solrl.quant.backends.transformer_engine:TransformerEngineBackend",
    "torchao": "solrl.quant.backends.torchao_backend:TorchAOBackend",
}


class BackendUnavailable(RuntimeError):
    """A backend's package or hardware is missing; the message says which and how to fix it."""


class Backend(Protocol):
    name: str

    def check(self, fmt: str) -> None:
        """Raise BackendUnavailable unless `fmt` can run here."""

    def make_linear(self, layer: nn.Module, recipe) -> nn.Module:
        """The quantized replacement for one Linear / 1x1 Conv2d."""


def available_backends() -> list[str]:
    """Every registered backend name (registered, not necessarily runnable here)."""
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    """Instantiate the backend `name`, importing its module now."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"quant backend {name!r} is unknown; set quant.backend to one of {available_backends()}"
        ) from None
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)()


def require_cuda_capability(backend: str, fmt: str, minimum: tuple[int, int], generation: str) -> None:
    """Raise BackendUnavailable unless a CUDA GPU of at least `minimum` capability is visible."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"quant backend {backend!r} runs {fmt} on NVIDIA GPUs of compute capability "
            f">= {minimum[0]}.{minimum[1]} ({generation}); no CUDA device is visible. "
            f"Use quant.backend=emulated on this machine."
        )
    cap = torch.cuda.get_device_capability()
    if cap < minimum:
        raise BackendUnavailable(
            f"quant backend {backend!r} needs compute capability >= {minimum[0]}.{minimum[1]} "
            f"({generation}) for {fmt}; this GPU is {cap[0]}.{cap[1]}. "
            f"Use quant.backend=emulated or a format this GPU supports."
        )
