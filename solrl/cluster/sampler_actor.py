"""A sampler (explore or regenerate) as a Ray actor: built from the run config inside the actor's
process; Ray is applied at spawn time (`ray.remote(cls)`), so the class stays importable and
testable without a cluster."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from solrl.cluster.worker_process import heavy_modules, set_threads
from solrl.config import RunConfig
from solrl.evaluation import eval_copy, measure_run, run_grid
from solrl.explore_audit import ExploreSamplers
from solrl.faults import FaultPlan
from solrl.learner.plan import kept_bytes, shards_of
from solrl.learner.weight_sync import WeightUpdate
from solrl.nbytes import SCORER_BYTES, payload_bytes
from solrl.types import Preview, PromptGroup, Selection, per_selection
from solrl.workers.sampler import Role, sampler_from_config


class SamplerActor:
    """A SamplerWorker (explore or regenerate) living in its own process."""

    def __init__(self, config: RunConfig, role: Role, name: str, cpus: float = 1):
        set_threads(cpus)
        self.name, self.role = name, role
        self.worker = sampler_from_config(config, role, with_reward=config.cluster.reward_workers == 0)
        self.config, self.world = config, config.cluster.learner_ranks
        self.faults = FaultPlan(config.cluster.faults, name)
        # rollout.precision_control: explore samplers by precision, and the update they all serve
        audited = role == "explore" and config.rollout.precision_control is not None
        self.explorers = ExploreSamplers(config, self.worker.policy, self.worker.reward is not None, first=self.worker) if audited else None
        self.update: WeightUpdate | None = None
        self.rung = self.worker.precision  # the ladder rung explore runs at (a precision, or one at a step count)

    def info(self) -> dict:
        """Name, role, process id and the policy version served."""
        return {"name": self.name, "role": self.role, "pid": os.getpid(), "version": self.worker.version, "heavy_modules": heavy_modules()}

    def explore(self, groups: Sequence[PromptGroup]) -> dict:
        """The proxy rewards of whole prompt groups (group-then-seed order: the driver knows the
        groups it sent), with busy seconds."""
        self.faults.reached("explore")
        start = time.perf_counter()
        candidates = self.worker.explore(groups)
        rewards = [r for c in candidates for r in c.proxy_rewards]
        return self._report(start) | {"rewards": rewards, "seconds_per_group": candidates[0].seconds if candidates else 0.0}

    def regenerate(self, selections: Sequence[Selection]) -> tuple:
        """One selection rebuilt for the learners: its x0 in one shard per learner rank and its
        conditioning once (solrl.learner.plan; left in the object store), then a small summary for
        the driver: BF16 rewards, busy seconds, version, the stored outputs' bytes."""
        self.faults.reached("regenerate")
        start = time.perf_counter()
        batch = self.worker.regenerate(_one(selections))
        shards, cond = shards_of(batch, self.world)
        summary = {"rewards": per_selection(batch.rewards, selections), "seconds": time.perf_counter() - start, "kept_bytes": kept_bytes(shards, cond)}
        return (*shards, cond, summary | {"version": batch.version, "worker": self.name})

    # Without a reward of their own (cluster.reward_workers > 0) samplers return images, which
    # stay in the object store until a RewardActor scores them.
    def explore_images(self, groups: Sequence[PromptGroup]) -> tuple[torch.Tensor, dict]:
        """(previews, report) for whole prompt groups, unscored."""
        self.faults.reached("explore_images")
        start = time.perf_counter()
        _, images, per_group = self.worker.explore_images(groups)
        return images, self._report(start) | {"seconds_per_group": per_group, "bytes": {"images": images.nbytes}}

    def regenerate_images(self, selections: Sequence[Selection]) -> tuple:
        """regenerate's shards and conditioning, then the images for a reward worker to score, and
        a report."""
        self.faults.reached("regenerate_images")
        start = time.perf_counter()
        batch, images = self.worker.regenerate_images(_one(selections))
        shards, cond = shards_of(batch, self.world)
        return (*shards, cond, images, self._report(start) | {"bytes": {"images": images.nbytes}, "kept_bytes": kept_bytes(shards, cond)})

    def _report(self, start: float) -> dict:
        return {"seconds": time.perf_counter() - start, "version": self.worker.version, "worker": self.name, "precision": self.rung}

    def apply_update(self, update: WeightUpdate) -> int:
        """Verify and merge a published weight update; the version now served."""
        self.faults.reached("apply_update")
        if self.explorers is not None:
            self.update = update  # a sampler at another precision is brought to it when first used
        return self.worker.apply_update(update)

    # -- the explore audit (rollout.precision_control; solrl.cluster.audit_desk) --------------------
    def set_explore_precision(self, precision: str) -> str:
        """Explore at `precision` from the next task on (actor calls run in order)."""
        self.worker, self.rung = self.explorers.at(precision, self.update), precision
        return precision

    def preview(self, previews: Sequence[Preview]) -> dict:
        """Proxy rewards of audited seeds at the preview's (cheaper) precision."""
        self.faults.reached("preview")
        start, (work,) = time.perf_counter(), previews
        sampler = self.explorers.at(work.precision, self.update)
        (candidates,) = sampler.explore([work.group])
        return self._report(start) | {"rewards": list(candidates.proxy_rewards), "precision": work.precision}

    def preview_images(self, previews: Sequence[Preview]) -> tuple[torch.Tensor, dict]:
        """preview's images, for a reward worker to score."""
        self.faults.reached("preview")
        start, (work,) = time.perf_counter(), previews
        _, images, _ = self.explorers.at(work.precision, self.update).explore_images([work.group])
        return images, self._report(start) | {"bytes": {"images": images.nbytes}, "precision": work.precision}

    def audit(self, selections: Sequence[Selection]) -> dict:
        """BF16 rewards of seeds regenerated for the audit only, never trained on."""
        self.faults.reached("audit")
        start = time.perf_counter()
        batch = self.worker.regenerate(_one(selections))
        return self._report(start) | {"rewards": per_selection(batch.rewards, selections)}

    def audit_images(self, selections: Sequence[Selection]) -> tuple[torch.Tensor, dict]:
        """audit's images, for a reward worker to label."""
        self.faults.reached("audit")
        start = time.perf_counter()
        _, images = self.worker.regenerate_images(_one(selections))
        return images, self._report(start) | {"bytes": {"images": images.nbytes}}

    def _eval_model(self, adapter_state: dict[str, torch.Tensor] | None):
        return eval_copy(self.worker.policy, self.config, adapter_state)

    def measure(self, adapter_state: dict[str, torch.Tensor] | None, pairs: Sequence[tuple[str, int]], scorer=None) -> dict:
        """Per-image eval measures (solrl.evaluation.measure_run) of the base model plus
        `adapter_state` (None: the base alone) on a slice of the eval plan. `scorer`: a
        RewardActor handle, for a sampler that holds no reward."""
        self.faults.reached("measure")
        reward = self.worker.reward
        if reward is None and scorer is not None:
            reward = _PooledReward(scorer)
        measures = measure_run(self.config, self._eval_model(adapter_state), pairs, reward)
        return measures | ({SCORER_BYTES: np.array([reward.sent])} if isinstance(reward, _PooledReward) else {})

    def grid(self, adapter_state: dict[str, torch.Tensor] | None):
        """The run's sample grid (a PIL image) of the base model plus `adapter_state`."""
        self.faults.reached("grid")
        return run_grid(self.config, self._eval_model(adapter_state))


class _PooledReward:
    """A reward callable that asks a RewardActor."""

    def __init__(self, handle):
        self.handle = handle
        self.sent = 0  # bytes of images and prompts sent to the reward worker, and of rewards back

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        import ray

        reply = ray.get(self.handle.score_eval.remote(images, list(prompts)))
        self.sent += payload_bytes(images) + payload_bytes(list(prompts)) + payload_bytes(reply)
        return torch.tensor(reply["rewards"], dtype=torch.float32)


def _one(selections: Sequence[Selection]) -> Sequence[Selection]:
    if len(selections) != 1:
        raise ValueError(f"a regeneration task holds one selection (one prompt group), got {len(selections)}")
    return selections
