"""The optimizer's settings and the learning rate of each step (train.optim).

A constant rate leaves a long run's policy moving as much at its end as at its middle, so the
last adapter is one noisy point of a plateau; a cosine tail lets it settle. The rate is a
function of the step alone, so a resumed run (its step restored) continues the same curve."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OptimConfig(BaseModel):
    """AdamW settings; defaults are docs/method.md's."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(description="Learning rate.", default=3e-4, gt=0)
    betas: tuple[float, float] = Field(description="Adam betas.", default=(0.9, 0.999))
    weight_decay: float = Field(description="Decoupled weight decay.", default=1e-4, ge=0)
    grad_clip: float = Field(description="Gradient-norm clip.", default=1.0, gt=0)
    schedule: Literal["constant", "cosine"] = Field(
        description="Learning rate over the run's steps: 'constant' (the method's), or 'cosine': lr until decay_from of train.iterations, "
        "then down a half cosine to min_lr_ratio x lr at the last step (long runs end on a settled policy: docs/method.md).",
        default="constant",
    )
    decay_from: float = Field(description="cosine: the share of the run's steps taken at the full rate before the decay (0: decay from the first).", default=0.0, ge=0, lt=1)
    min_lr_ratio: float = Field(description="cosine: the rate the decay ends at, as a share of lr.", default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _decay_needs_cosine(self) -> OptimConfig:
        if self.schedule == "constant":
            for name, value in (("decay_from", self.decay_from), ("min_lr_ratio", self.min_lr_ratio)):
                if value != 0:
                    raise ValueError(f"train.optim.{name}={value} has no effect with train.optim.schedule='constant'; set schedule: cosine")
        return self


def lr_at(step: int, total_steps: int | None, optim: OptimConfig) -> float:
    """The rate of 0-based optimizer step `step` of `total_steps` (None: the run's length is
    unknown, so the rate stays constant)."""
    if optim.schedule == "constant" or not total_steps:
        return optim.lr
    progress = min(step / total_steps, 1.0)
    if progress <= optim.decay_from:
        return optim.lr
    into_decay = (progress - optim.decay_from) / (1 - optim.decay_from)
    floor = optim.lr * optim.min_lr_ratio
    return floor + (optim.lr - floor) * 0.5 * (1 + math.cos(math.pi * into_decay))
