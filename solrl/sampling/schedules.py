"""Flow-matching time grids. t = 1 is pure noise, t = 0 the clean sample; x_t = (1 - t) x0 + t eps."""

from __future__ import annotations

import torch


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's resolution shift: t' = s t / (1 + (s - 1) t); shift > 1 spends more steps at high noise."""
    if shift <= 0:
        raise ValueError(f"sampling.shift must be > 0, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """The steps + 1 times from 1 down to 0 (fp64, CPU), evenly spaced before the shift."""
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)
