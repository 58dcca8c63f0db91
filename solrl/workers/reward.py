"""RewardWorker: scores images for samplers that hold no reward model of their own, so a reward
too big to sit beside every sampler lives in a pool of its own (cluster.reward_workers > 0).

Scoring is chunked exactly as a sampler chunks it, so a pooled reward returns the same numbers a
sampler's own copy would."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from solrl.builders import build_reward
from solrl.config import RunConfig
from solrl.types import Candidates, PromptGroup

BATCH_SIZE = 256  # images per reward call, here and in SamplerWorker


def score_in_batches(reward, images: torch.Tensor, prompts: Sequence[str], batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """(B,) float32 rewards of images (B, 3, H, W) against their prompts, `batch_size` at a time."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts; they pair one to one")
    out = [reward(images[i : i + batch_size], list(prompts[i : i + batch_size])).float() for i in range(0, len(prompts), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def candidates_from_rewards(groups: Sequence[PromptGroup], rewards: Sequence[float], version: int, seconds: float) -> list[Candidates]:
    """Explore's records for `groups`, whose seeds' rewards come in group-then-seed order."""
    expected = sum(len(g.seeds) for g in groups)
    if len(rewards) != expected:
        raise ValueError(f"{len(rewards)} rewards for {expected} seeds")
    out, offset = [], 0
    for g in groups:
        out.append(Candidates(g, tuple(float(r) for r in rewards[offset : offset + len(g.seeds)]), version, seconds))
        offset += len(g.seeds)
    return out


class RewardWorker:
    """Holds one reward model; scores explore previews and regenerated samples."""

    def __init__(self, reward, batch_size: int = BATCH_SIZE):
        self.reward = reward
        self.batch_size = batch_size

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """(B,) rewards of (image, prompt) pairs."""
        with torch.no_grad():
            return score_in_batches(self.reward, images, prompts, self.batch_size)


def reward_worker_from_config(config: RunConfig) -> RewardWorker:
    """The reward pool's worker a run config describes."""
    return RewardWorker(build_reward(config.reward))
