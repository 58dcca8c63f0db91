"""One rank of the learner group: torch.distributed + FSDP2 (or a whole replica per rank,
train.sharding) around the same NFTTrainer the single-process loop uses.

Every rank receives every row's labels (advantages need all rewards) and the samples of its own
rows only (solrl.learner.plan); the ranks' gradients add up to the single-process gradient, so the
step equals it.
The cluster layer places N of these in a Ray placement group; tests spawn them as processes.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard

from solrl.builders import build_policy
from solrl.config import ModelConfig, RunConfig, TrainConfig
from solrl.learner.nft_trainer import NFTTrainer
from solrl.learner.trainer_state import full, load_trainer_state, trainer_state
from solrl.learner.weight_sync import WeightUpdate
from solrl.models.base import OLD, POLICY
from solrl.sampling import SamplingConfig
from solrl.types import TrainBatch, TrainLabels


def shard_model(transformer: torch.nn.Module, reshard_after_forward: bool = True) -> None:
    """FSDP2 over each transformer block, then the root; gradients are summed over ranks (each
    rank's loss already carries its share of the batch mean), in a plain SUM gloo supports.
    reshard_after_forward=False keeps each block's gathered weights until the backward (memory
    for fewer gathers: benchmarks/gpu_learner.py measures both)."""
    # FLUX has a second stack of single-stream blocks
    for stack in ("transformer_blocks", "single_transformer_blocks"):
        for block in getattr(transformer, stack, []):
            fully_shard(block, reshard_after_forward=reshard_after_forward)
    fully_shard(transformer, reshard_after_forward=reshard_after_forward)
    for module in transformer.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def add_over_ranks(grads: list[torch.Tensor]) -> None:
    """Each gradient replaced by its sum over the ranks, in one collective (a replicated group's
    reduction; with two ranks the sum is the one-process step's bit for bit)."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))


@dataclass(frozen=True)
class RankConfig:
    """What a learner rank needs of the run's config, and nothing else."""

    model: ModelConfig
    train: TrainConfig
    sampling: SamplingConfig  # the regeneration sampler: the times trained on
    seed: int
    deterministic: bool

    @classmethod
    def of(cls, config: RunConfig) -> RankConfig:
        return cls(config.model, config.train, config.rollout.regenerate, config.seed, config.deterministic)


class LearnerRank:
    """Policy, old policy, optimizer and evaluation EMA of one data-parallel rank."""

    def __init__(self, config: RankConfig, rank: int, world: int, master_addr: str, master_port: int, backend: str | None = None):
        self.config, self.rank, self.world = config, rank, world
        if config.deterministic:
            torch.set_num_threads(1)  # see solrl/determinism.py
        torch.manual_seed(config.seed)
        if world > 1 and not dist.is_initialized():
            os.environ.setdefault("MASTER_ADDR", master_addr)
            os.environ["MASTER_PORT"] = str(master_port)
            backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
            dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=5))
        self.policy = build_policy(config.model)
        sharded = world > 1 and config.train.sharding == "fsdp"
        if sharded:
            shard_model(self.policy.transformer)
        self.trainer = NFTTrainer.for_run(self.policy, config.train, config.sampling, config.seed)
        if sharded:
            self.trainer.gradient_sync = self.policy.transformer.set_requires_gradient_sync
        elif world > 1:
            self.trainer.reduce_gradients = add_over_ranks

    @property
    def version(self) -> int:
        return self.trainer.step_count

    def step(self, labels: TrainLabels, shard: TrainBatch) -> dict[str, float]:
        """One optimizer step on this rank's rows (`shard`; `labels` are every row's); statistics
        are summed over ranks."""
        stats = self.trainer.step_shard(labels, shard, self.rank, self.world)
        if self.world > 1:
            keys = ("loss", "policy_loss", "kl")
            summed = torch.tensor([stats[k] for k in keys], dtype=torch.float64)
            dist.all_reduce(summed)
            stats.update(zip(keys, summed.tolist()))
        return self.trainer.adapt(stats)

    def adapter_state(self, adapter: str = OLD) -> dict[str, torch.Tensor]:
        """One adapter's full (unsharded) weights; every rank must call it."""
        return {k: full(p) for k, p in self.policy.adapter_parameters(adapter).items()}

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The evaluation EMA, unsharded; every rank must call it."""
        keys = list(self.policy.adapter_parameters(POLICY).keys())
        return {k: full(v) for k, v in zip(keys, self.trainer.ema, strict=True)}

    def weight_update(self) -> WeightUpdate | None:
        """The rollout (old) policy at the current version, built on rank 0; collective."""
        state = self.adapter_state(OLD)
        return WeightUpdate.build(self.version, state) if self.rank == 0 else None

    # -- checkpoint state ------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """Every tensor a checkpoint needs, unsharded: adapters, EMA and AdamW moments; collective."""
        return trainer_state(self.policy, self.trainer)

    def load_state(self, tensors: dict[str, torch.Tensor], step: int) -> None:
        """Restore what `state` returned (each rank takes its own shards)."""
        load_trainer_state(self.policy, self.trainer, tensors, step)

    def close(self) -> None:
        """Leave the process group."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
