"""One learner rank (FSDP2) as a Ray actor."""

from __future__ import annotations

import os
import time

import torch

from solrl.cluster.worker_process import heavy_modules, set_threads
from solrl.config import RunConfig
from solrl.faults import FaultPlan
from solrl.learner.plan import StepPlan
from solrl.learner.rank import LearnerRank, RankConfig
from solrl.learner.step_stats import iteration_stats
from solrl.learner.weight_sync import WeightUpdate
from solrl.models.base import OLD, POLICY
from solrl.nbytes import tensor_bytes


class LearnerActor:
    """One LearnerRank in its own process."""

    def __init__(self, config: RunConfig, rank: int, world: int, master_addr: str, master_port: int, cpus: float = 1, armed: bool = True):
        set_threads(cpus)
        self.rank = LearnerRank(RankConfig.of(config), rank, world, master_addr, master_port)
        self.faults = FaultPlan(config.cluster.faults, f"learner-{rank}", armed)
        if "backward" in self.faults.armed:  # inside backward: the first block's gradients come last
            blocks = getattr(self.rank.policy.transformer, "transformer_blocks", None)
            module = blocks[0] if blocks else self.rank.policy.transformer
            module.register_full_backward_pre_hook(lambda *_: self.faults.reached("backward"))

    def info(self) -> dict:
        return {"rank": self.rank.rank, "pid": os.getpid(), "version": self.rank.version, "heavy_modules": heavy_modules()}

    def step(self, plan: StepPlan, *pieces) -> tuple[dict, WeightUpdate | None]:
        """Train one step of `plan` on this rank's rows (`pieces`: StepPlan.shards'); returns
        (stats, the new rollout policy's WeightUpdate on rank 0, None elsewhere)."""
        self.faults.reached("step")
        start = time.perf_counter()
        shards = plan.shards(self.rank.rank, pieces)
        stats = [self.rank.step(plan.labels(p), shard) for p, shard in enumerate(shards)]
        out = iteration_stats(stats) | {"version": self.rank.version, "seconds": time.perf_counter() - start}
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
