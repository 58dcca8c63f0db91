"""The one sampling loop: explore (few steps, quantized model) and regenerate (full steps, BF16)
both call `sample`, so the same seed walks the same ODE on both sides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from solrl.models.base import Conditioning, Sampleable
from solrl.sampling.noise import batch_noise
from solrl.sampling.schedules import time_grid
from solrl.sampling.solvers import solve


class SamplingConfig(BaseModel):
    """How one image is drawn from its seed."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(default=10, ge=1, description="Solver steps from noise to image.")
    solver: Literal["euler", "dpm2"] = Field(default="dpm2", description="ODE solver (dpm2: DPM-Solver++(2M), second order, one model call per step like euler).")
    shift: float = Field(default=1.0, gt=0, description="Time-schedule shift (SD3's; 1: uniform in t).")
    # Batched GEMMs may reduce in a different order than unbatched ones (rows then differ by ~1e-7).
    micro_batch: int | None = Field(
        default=None, ge=1, description="Rows per model call (None: all); 1 makes every sample independent of its batch."
    )


@torch.no_grad()
def sample(
    model: Sampleable, cond: Conditioning, seeds: Sequence[int], config: SamplingConfig, device=None
) -> torch.Tensor:
    """Clean samples x0 (fp32, batch-first) for `seeds`, row i conditioned on cond row i."""
    if len(cond) != len(seeds):
        raise ValueError(f"got {len(seeds)} seeds but {len(cond)} conditioning rows; pass one row per seed")
    device = device or getattr(model, "device", "cpu")  # noise is drawn on the CPU, then moved
    grid = time_grid(config.steps, config.shift)
    chunk = config.micro_batch or max(len(seeds), 1)
    outputs = []
    for start in range(0, len(seeds), chunk):
        rows = slice(start, start + chunk)
        c = cond.select(rows).to(device)
        x = batch_noise(seeds[rows], model.sample_shape, device=device)

        def velocity(x_t: torch.Tensor, t: float, c: Conditioning = c) -> torch.Tensor:
            tt = torch.full((x_t.shape[0],), t, dtype=torch.float32, device=x_t.device)
            return model.velocity(x_t, tt, c).float()

        outputs.append(solve(velocity, x, grid, config.solver))
    if not outputs:
        return torch.empty(0, *model.sample_shape)
    return torch.cat(outputs)


def sample_images(
    model: Sampleable, prompts: Sequence[str], seeds: Sequence[int], config: SamplingConfig, device=None
) -> torch.Tensor:
    """Decoded images in [0, 1] for (prompt, seed) pairs."""
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one prompt per seed")
    cond = model.encode_prompts(list(prompts))
    return model.decode(sample(model, cond, seeds, config, device))
