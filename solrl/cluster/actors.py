"""The plain workers, as Ray actors. Each wrapper builds its worker from the run config inside
the actor's process and forwards calls; Ray is applied at spawn time (`ray.remote(cls)`), so
these classes stay importable and testable without a cluster."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from solrl.config import RunConfig
from solrl.evaluation import eval_copy, measure_run, run_grid
from solrl.faults import FaultPlan
from solrl.learner.plan import StepPlan, kept_bytes, shards_of
from solrl.learner.rank import LearnerRank, RankConfig
from solrl.learner.weight_sync import WeightUpdate
from solrl.models.base import OLD, POLICY
from solrl.nbytes import SCORER_BYTES, payload_bytes, tensor_bytes
from solrl.types import PromptGroup, Selection, per_selection
from solrl.workers.reward import reward_worker_from_config
from solrl.workers.sampler import Role, sampler_from_config


def _threads(cpus: float) -> None:
    # Ray sets OMP_NUM_THREADS from num_cpus; torch reads it only at import, so set it explicitly.
    torch.set_num_threads(max(1, int(cpus)))


class SamplerActor:
    """A SamplerWorker (explore or regenerate) living in its own process."""

    def __init__(self, config: RunConfig, role: Role, name: str, cpus: float = 1):
        _threads(cpus)
        self.name, self.role = name, role
        self.worker = sampler_from_config(config, role, with_reward=config.cluster.reward_workers == 0)
        self.config, self.world = config, config.cluster.learner_ranks
        self.faults = FaultPlan(config.cluster.faults, name)

    def info(self) -> dict:
        """Name, role, process id and the policy version served."""
        return {"name": self.name, "role": self.role, "pid": os.getpid(), "version": self.worker.version}

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
        return {"seconds": time.perf_counter() - start, "version": self.worker.version, "worker": self.name}

    def apply_update(self, update: WeightUpdate) -> int:
        """Verify and merge a published weight update; the version now served."""
        self.faults.reached("apply_update")
        return self.worker.apply_update(update)

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

        reply = ray.get(self.handle.score.remote(images, list(prompts)))
        self.sent += payload_bytes(images) + payload_bytes(list(prompts)) + payload_bytes(reply)
        return torch.tensor(reply["rewards"], dtype=torch.float32)


def _one(selections: Sequence[Selection]) -> Sequence[Selection]:
    if len(selections) != 1:
        raise ValueError(f"a regeneration task holds one selection (one prompt group), got {len(selections)}")
    return selections


class RewardActor:
    """A RewardWorker in its own process: the reward pool (cluster.reward_workers > 0)."""

    def __init__(self, config: RunConfig, name: str, cpus: float = 1):
        _threads(cpus)
        self.name = name
        self.worker = reward_worker_from_config(config)
        self.faults = FaultPlan(config.cluster.faults, name)

    def info(self) -> dict:
        return {"name": self.name, "role": "reward", "pid": os.getpid()}

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        """The rewards of explore previews, with busy seconds."""
        self.faults.reached("score")
        return self._score(images, prompts)

    def label(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        """The BF16 rewards of regenerated images (the training labels), with busy seconds."""
        self.faults.reached("label")
        return self._score(images, prompts)

    def _score(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        start = time.perf_counter()
        rewards = self.worker.score(images, prompts).tolist()
        return {"rewards": rewards, "seconds": time.perf_counter() - start}


class LearnerActor:
    """One LearnerRank in its own process."""

    def __init__(self, config: RunConfig, rank: int, world: int, master_addr: str, master_port: int, cpus: float = 1, armed: bool = True):
        _threads(cpus)
        self.rank = LearnerRank(RankConfig.of(config), rank, world, master_addr, master_port)
        self.faults = FaultPlan(config.cluster.faults, f"learner-{rank}", armed)
        if "backward" in self.faults.armed:  # inside backward: the first block's gradients come last
            blocks = getattr(self.rank.policy.transformer, "transformer_blocks", None)
            module = blocks[0] if blocks else self.rank.policy.transformer
            module.register_full_backward_pre_hook(lambda *_: self.faults.reached("backward"))

    def info(self) -> dict:
        return {"rank": self.rank.rank, "pid": os.getpid(), "version": self.rank.version}

    def step(self, plan: StepPlan, *pieces) -> tuple[dict, WeightUpdate | None]:
        """Train one step of `plan` on this rank's rows (`pieces`: StepPlan.shards'); returns
        (stats, the new rollout policy's WeightUpdate on rank 0, None elsewhere)."""
        self.faults.reached("step")
        start = time.perf_counter()
        shards = plan.shards(self.rank.rank, pieces)
        stats = [self.rank.step(plan.labels(p), shard) for p, shard in enumerate(shards)]
        out = {k: float(sum(s[k] for s in stats) / len(stats)) for k in ("loss", "policy_loss", "kl", "grad_norm")}
        out.update(old_decay=stats[-1]["old_decay"], version=self.rank.version, seconds=time.perf_counter() - start)
        sync_start = time.perf_counter()
        self.faults.reached("publish")
        update = self.rank.weight_update()
        out["publish_seconds"] = time.perf_counter() - sync_start
        out["update_bytes"] = update.nbytes if update is not None else 0
        return out, update

    def weight_update(self) -> tuple[WeightUpdate | None, int]:
        """The current rollout policy as a WeightUpdate on rank 0 (collective), and its bytes."""
        update = self.rank.weight_update()
        return update, update.nbytes if update is not None else 0

    def state(self) -> tuple[dict[str, torch.Tensor] | None, int]:
        """Full checkpoint tensors on rank 0 (None elsewhere) and their bytes; every rank must be called."""
        tensors = self.rank.state()
        return (tensors, tensor_bytes(tensors)) if self.rank.rank == 0 else (None, 0)

    def load_state(self, tensors: dict[str, torch.Tensor], step: int) -> int:
        self.rank.load_state(tensors, step)
        return self.rank.version

    def adapter_states(self) -> tuple:
        """The policy, old and EMA adapter states on rank 0 (None elsewhere) and the bytes of one,
        as four returns, so each adapter is its own object (collective)."""
        states = (self.rank.adapter_state(POLICY), self.rank.adapter_state(OLD), self.rank.ema_state())
        return (*states, tensor_bytes(states[2])) if self.rank.rank == 0 else (None, None, None, 0)

    def close(self) -> None:
        self.rank.close()
