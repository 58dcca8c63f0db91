"""A reward worker (the reward pool, cluster.reward_workers > 0) as a Ray actor."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch

from solrl.cluster.worker_process import heavy_modules, set_threads
from solrl.config import RunConfig
from solrl.faults import FaultPlan
from solrl.workers.reward import reward_worker_from_config


class RewardActor:
    """A RewardWorker in its own process: the reward pool (cluster.reward_workers > 0)."""

    def __init__(self, config: RunConfig, name: str, cpus: float = 1):
        set_threads(cpus)
        self.name = name
        self.worker = reward_worker_from_config(config)
        self.faults = FaultPlan(config.cluster.faults, name)

    def info(self) -> dict:
        return {"name": self.name, "role": "reward", "pid": os.getpid(), "heavy_modules": heavy_modules()}

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        """The rewards of explore previews, with busy seconds."""
        self.faults.reached("score")
        return self._score(images, prompts)

    def score_eval(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        """The rewards of an eval's images, for the sampler measuring it (its own fault point)."""
        self.faults.reached("score_eval")
        return self._score(images, prompts)

    def label(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        """The BF16 rewards of regenerated images (the training labels), with busy seconds."""
        self.faults.reached("label")
        return self._score(images, prompts)

    def _score(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        start = time.perf_counter()
        rewards = self.worker.score(images, prompts).tolist()
        return {"rewards": rewards, "seconds": time.perf_counter() - start}
