"""The PolicyModel contract every model implements, and the conditioning it passes around.

A policy has up to three views of its velocity field: the trained policy (theta, adapter
"policy"), the lagging old policy that samplers run ("old"), and the reference model with no
adapter at all (None). The learner needs all three; samplers need a merged inference copy of
one of them in a chosen precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field

POLICY = "policy"
OLD = "old"
Adapter = Literal["policy", "old"] | None
Precision = Literal["fp32", "bf16", "nvfp4", "fp8_e4m3"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "nvfp4", "fp8_e4m3")


@dataclass
class Conditioning:
    """Prompt conditioning: named tensors that all share a leading batch dimension."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {k: v.shape[0] for k, v in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"conditioning tensors disagree on batch size: {sizes}")

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0] if self.tensors else 0

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def select(self, index: torch.Tensor | Sequence[int] | slice) -> Conditioning:
        """The rows at `index` (a slice, index list or index tensor)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        return Conditioning({k: v[index] for k, v in self.tensors.items()})

    def to(self, device=None, dtype: torch.dtype | None = None) -> Conditioning:
        """Move every tensor; `dtype` applies to floating tensors only."""
        out = {}
        for k, v in self.tensors.items():
            out[k] = v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else None)
        return Conditioning(out)

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        """Concatenate along the batch dimension."""
        keys = parts[0].tensors.keys()
        return Conditioning({k: torch.cat([p.tensors[k] for p in parts]) for k in keys})


class LoraSpec(BaseModel):
    """Low-rank adapter shape and placement (docs/method.md: r=32, alpha=64 on attention projections)."""

    model_config = ConfigDict(extra="forbid")
    rank: int = Field(default=32, ge=1, description="LoRA rank r.")
    alpha: float = Field(default=64.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"], description="Module names (peft's matching) that get adapters."
    )

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


@runtime_checkable
class Sampleable(Protocol):
    """What the sampling loop needs: conditioning, a velocity field, and a decoder."""

    sample_shape: tuple[int, ...]  # one sample (image or latent), no batch dimension

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Conditioning for each prompt, batch-first."""

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Flow velocity v(x_t, t | c); t has shape (B,), in [0, 1], 1 = noise."""

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean samples to RGB images in [0, 1], (B, 3, H, W), fp32."""


@runtime_checkable
class PolicyModel(Sampleable, Protocol):
    """A trainable policy: adapters to read and write, and merged inference copies to sample with."""

    def velocity(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, adapter: Adapter = POLICY
    ) -> torch.Tensor:
        """Velocity under the named adapter (None = the reference model, no adapter)."""

    def adapter_state(self, adapter: str = POLICY) -> dict[str, torch.Tensor]:
        """A detached copy of the adapter's weights, keyed without the adapter name."""

    def load_adapter_state(self, state: dict[str, torch.Tensor], adapter: str = POLICY) -> None:
        """Overwrite the adapter's weights in place; keys must match adapter_state's."""

    def adapter_parameters(self, adapter: str = POLICY) -> dict[str, torch.nn.Parameter]:
        """The adapter's live parameters (the policy's are the ones the optimizer trains)."""

    def inference_copy(self, precision: Precision = "bf16", adapter: Adapter = OLD, quant=None) -> Sampleable:
        """A frozen copy with `adapter` merged into the base weights, cast or quantized to `precision`."""
