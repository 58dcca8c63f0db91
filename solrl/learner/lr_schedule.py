"""The learning rate of each optimizer step (train.optim.schedule).

A constant rate leaves a long run's policy moving as much at its end as at its middle, so the
last adapter is one noisy point of a plateau; a cosine tail lets it settle. The rate is a
function of the step alone, so a resumed run (its step restored) continues the same curve."""

from __future__ import annotations

import math

from solrl.config import OptimConfig


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
