"""The SD3 transformer call (shared with the SD3.5 pipeline policy) and the pixel-space decode of\nthe built-in pixel-space models."""

from __future__ import annotations

import torch
from torch import nn

from solrl.models.base import Conditioning
from solrl.models.lora_policy import DiffusersPolicy


def sd3_forward(transformer: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """Velocity of an SD3Transformer2DModel at flow time t in [0, 1] (it was trained on t * 1000)."""
    return transformer(
        hidden_states=x_t,
        encoder_hidden_states=cond["encoder_hidden_states"],
        pooled_projections=cond["pooled_projections"],
        timestep=t.to(x_t.dtype) * 1000.0,
    ).sample


class SD3PixelPolicy(DiffusersPolicy):
    """A DiffusersPolicy whose transformer is an SD3Transformer2DModel over images in [-1, 1]."""

    def _forward(self, transformer: nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return sd3_forward(transformer, x_t, t, cond)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0.float() + 1.0) / 2.0).clamp(0.0, 1.0)
