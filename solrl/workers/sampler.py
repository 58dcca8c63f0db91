"""SamplerWorker: one class for both pools. An NVFP4 worker explores (previews scored, then
thrown away); a BF16 worker regenerates the selected seeds into training samples."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Literal

import torch

from solrl.workers.reward import BATCH_SIZE, candidates_from_rewards, score_in_batches
from solrl.models.base import OLD, Precision
from solrl.builders import build_policy, build_reward
from solrl.config import RunConfig
from solrl.determinism import single_threaded
from solrl.learner.weight_sync import WeightUpdate
from solrl.models.lora_policy import DiffusersPolicy
from solrl.quant.linear import QuantRecipe
from solrl.sampling import SamplingConfig, sample
from solrl.types import PromptGroup, Selection, TrainBatch

Role = Literal["explore", "regenerate"]


class SamplerWorker:
    """Holds a merged copy of the rollout (old) policy in one precision, and a reward model
    (None when a RewardWorker pool scores its images)."""

    def __init__(
        self,
        policy: DiffusersPolicy,
        reward,
        precision: Precision,
        sampling: SamplingConfig,
        quant: QuantRecipe | None = None,
        compute_dtype: str = "auto",
        batch_size: int = BATCH_SIZE,
        deterministic: bool = False,
    ):
        self.policy = policy
        self.deterministic = deterministic
        self.reward = reward
        self.sampling = sampling
        self.batch_size = batch_size
        self.precision = precision
        self.model = policy.inference_copy(precision, adapter=OLD, quant=quant, compute_dtype=compute_dtype)
        self.model.version = 0

    @property
    def version(self) -> int:
        """The policy version this worker currently serves."""
        return self.model.version

    def load_weights(self, adapter_state: dict[str, torch.Tensor], version: int) -> int:
        """Merge a new rollout-policy adapter and re-quantize; returns the version now served."""
        with single_threaded(self.deterministic):  # merged bits must not depend on the core count
            self.model.update_adapter(adapter_state, version)
        return self.version

    def apply_update(self, update: WeightUpdate) -> int:
        """Verify a published WeightUpdate's checksum, then merge it; returns the version served."""
        return self.load_weights(update.verify(), update.version)

    def _generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, decoded images) for (prompt, seed) pairs, in batches."""
        xs, images = [], []
        for start in range(0, len(seeds), self.batch_size):
            p, s = list(prompts[start : start + self.batch_size]), list(seeds[start : start + self.batch_size])
            with torch.no_grad(), single_threaded(self.deterministic):
                cond = self.model.encode_prompts(p)
                x0 = sample(self.model, cond, s, self.sampling)
                images.append(self.model.decode(x0))
            xs.append(x0)
        return torch.cat(xs), torch.cat(images)

    def _score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if self.reward is None:
            raise RuntimeError("this sampler holds no reward model (cluster.reward_workers > 0): its images go to the reward pool")
        with torch.no_grad():
            return score_in_batches(self.reward, images, prompts, self.batch_size)

    def explore_images(self, groups: Sequence[PromptGroup]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Previews of every seed of every group, in group-then-seed order: (x0, images,
        seconds per group). Unscored: `explore` scores them here, a RewardWorker elsewhere."""
        start = time.perf_counter()
        prompts = [g.prompt for g in groups for _ in g.seeds]
        x0, images = self._generate(prompts, [s for g in groups for s in g.seeds])
        return x0, images, (time.perf_counter() - start) / max(1, len(groups))

    def explore(self, groups: Sequence[PromptGroup], keep_samples: bool = False):
        """Score every seed of every group with a cheap preview; keep only the scalars.

        With keep_samples the previews' x0 come back too (B, ...), in group-then-seed order, for
        the baselines that train on explored samples directly.
        """
        start = time.perf_counter()
        x0, images, _ = self.explore_images(groups)
        rewards = self._score(images, [g.prompt for g in groups for _ in g.seeds])
        out = candidates_from_rewards(groups, rewards.tolist(), self.version, (time.perf_counter() - start) / max(1, len(groups)))
        return (out, x0) if keep_samples else out

    def batch_from_samples(self, selections: Sequence[Selection], samples: dict[tuple[int, int], torch.Tensor]) -> TrainBatch:
        """A TrainBatch of already-sampled x0 (keyed by (prompt id, seed)), labelled with the
        rewards they were scored with: what training directly on explored samples means."""
        prompts = [s.group.prompt for s in selections for _ in s.seeds]
        with torch.no_grad():
            cond = self.model.encode_prompts(prompts)
        rewards = torch.tensor([r for s in selections for r in s.proxy_rewards], dtype=torch.float32)
        return TrainBatch(
            x0=torch.stack([samples[(s.group.prompt_id, seed)] for s in selections for seed in s.seeds]),
            cond=cond.to(dtype=torch.float32),
            rewards=rewards,
            groups=torch.tensor([s.group.prompt_id for s in selections for _ in s.seeds], dtype=torch.long),
            seeds=torch.tensor([seed for s in selections for seed in s.seeds], dtype=torch.long),
            version=self.version,
            proxy_rewards=rewards,
        )

    def regenerate_images(self, selections: Sequence[Selection]) -> tuple[TrainBatch, torch.Tensor]:
        """The selected seeds rebuilt at full quality, and their decoded images. The batch's
        rewards are NaN until scored: `regenerate` scores them here, a RewardWorker elsewhere."""
        prompts = [s.group.prompt for s in selections for _ in s.seeds]
        seeds = [seed for s in selections for seed in s.seeds]
        x0, images = self._generate(prompts, seeds)
        with torch.no_grad(), single_threaded(self.deterministic):
            cond = self.model.encode_prompts(prompts)
        # Conditioning once per prompt, in the dtype the model computed it in. Rows of one prompt in
        # one encoder batch are equal, so its first row stands for all (and the bits are unchanged).
        first: dict[str, int] = {}
        for i, p in enumerate(prompts):
            first.setdefault(p, i)
        row_of = {p: k for k, p in enumerate(first)}
        batch = TrainBatch(
            x0=x0,
            cond=cond.select(list(first.values())),
            cond_rows=torch.tensor([row_of[p] for p in prompts], dtype=torch.long),
            rewards=torch.full((len(seeds),), float("nan")),
            groups=torch.tensor([s.group.prompt_id for s in selections for _ in s.seeds], dtype=torch.long),
            seeds=torch.tensor(seeds, dtype=torch.long),
            version=self.version,
            proxy_rewards=torch.tensor([r for s in selections for r in s.proxy_rewards], dtype=torch.float32),
        )
        return batch, images

    def regenerate(self, selections: Sequence[Selection]) -> TrainBatch:
        """Rebuild the selected seeds at full quality, rescored: the training batch."""
        batch, images = self.regenerate_images(selections)
        return dataclasses.replace(batch, rewards=self._score(images, [s.group.prompt for s in selections for _ in s.seeds]))


def sampler_from_config(config: RunConfig, role: Role, policy: DiffusersPolicy | None = None, with_reward: bool = True) -> SamplerWorker:
    """The explore or regenerate worker a run config describes, on `policy` (built if omitted).

    With `deterministic: true` every image is sampled alone (micro_batch 1) on one thread, so a
    sample's bits do not depend on which seeds shared its batch or how many cores its worker has
    (CPU attention and norms reduce in a thread-count-dependent order, and NVFP4 rounding turns
    those last-bit differences into visible ones). Without `with_reward` the worker only
    renders; a RewardWorker pool scores its images.
    """
    ro = config.rollout
    sampling, precision = (ro.explore, ro.explore_precision) if role == "explore" else (ro.regenerate, ro.regenerate_precision)
    if config.deterministic:
        sampling = sampling.model_copy(update={"micro_batch": 1})
    policy = policy if policy is not None else build_policy(config.model)
    return SamplerWorker(
        policy,
        build_reward(config.reward) if with_reward else None,
        precision,
        sampling,
        ro.quant,
        ro.compute_dtype,
        deterministic=config.deterministic,
    )
