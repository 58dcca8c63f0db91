"""Scaling the rollout pool by policy (cluster.autoscale; off by default).

Exploration feeds regeneration, which feeds the learners. When rollout workers are busy all
iteration while regeneration idles, the pipeline waits on exploration: one more rollout worker
helps. When regeneration is busy all iteration while rollout workers idle, explored groups queue
up for it: one rollout worker fewer loses nothing. A signal must hold for `patience` iterations
in a row before the pool changes (hysteresis), by one worker at a time, within [min, max]; then
the count starts over, so the change is seen before the next one. Pure logic, no Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PoolBounds(BaseModel):
    """How small and how large the policy may make a pool."""

    model_config = ConfigDict(extra="forbid")
    min: int = Field(ge=1, description="Fewest workers the policy leaves in the pool.")
    max: int = Field(ge=1, description="Most workers the policy grows the pool to.")

    @model_validator(mode="after")
    def _ordered(self) -> PoolBounds:
        if self.min > self.max:
            raise ValueError(f"min={self.min} is above max={self.max}; set min <= max")
        return self


class AutoscaleConfig(BaseModel):
    """When to grow or shrink the rollout pool (see solrl/autoscale.py)."""

    model_config = ConfigDict(extra="forbid")
    rollout: PoolBounds = Field(description="Bounds of the rollout pool.")
    patience: int = Field(default=2, ge=1, description="Iterations a signal must hold before the pool changes.")
    busy: float = Field(default=0.8, gt=0, le=1, description="Busy ratio at or above which a pool counts as saturated.")
    idle: float = Field(default=0.5, ge=0, lt=1, description="Busy ratio below which a pool counts as waiting.")


@dataclass
class Decision:
    size: int  # the rollout pool's new size
    reason: str


class Autoscaler:
    """Feed it each iteration's busy ratios; it answers with a Decision when the pool should change."""

    def __init__(self, config: AutoscaleConfig):
        self.config = config
        self.signal, self.streak = 0, 0  # +1 grow, -1 shrink; iterations it has held

    def observe(self, busy: Mapping[str, float], size: int) -> Decision | None:
        c = self.config
        rollout, regen = _mean(busy, "rollout-"), _mean(busy, "regen-")
        if rollout is None or regen is None:
            return None
        signal = 1 if rollout >= c.busy and regen < c.idle else -1 if regen >= c.busy and rollout < c.idle else 0
        self.streak = self.streak + 1 if signal == self.signal and signal else (1 if signal else 0)
        self.signal = signal
        target = min(c.rollout.max, max(c.rollout.min, size + signal))
        if signal == 0 or self.streak < c.patience or target == size:
            return None
        self.signal, self.streak = 0, 0
        why = "exploration is the bottleneck" if signal > 0 else "explored groups queue for regeneration"
        return Decision(target, f"{why}: rollout busy {rollout:.2f}, regen busy {regen:.2f} for {c.patience} iterations")


def _mean(busy: Mapping[str, float], prefix: str) -> float | None:
    values = [v for k, v in busy.items() if k.startswith(prefix)]
    return sum(values) / len(values) if values else None
