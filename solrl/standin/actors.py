"""Stand-ins for the model-bearing Ray actors (solrl/cluster/{sampler,reward,learner}_actor.py): the same methods, the same
record types back, every tensor at the real model's size, every call as long as the modeled GPU
time (solrl/standin/timing.py). They import torch's tensors and nothing of a model stack, so
dozens of them fit one machine. `cluster.stand_in` picks them (solrl/cluster/worker_classes.py).
"""

from __future__ import annotations

import ctypes
import datetime
import os
import sys
from collections.abc import Sequence

import numpy as np
import torch

from solrl.faults import FaultPlan
from solrl.learner.plan import StepPlan, kept_bytes, shards_of
from solrl.learner.weight_sync import WeightUpdate
from solrl.nbytes import SCORER_BYTES, payload_bytes, tensor_bytes
from solrl.standin.audit import StandInAudit
from solrl.standin.payloads import Payloads, SmallPayloads, reward
from solrl.standin.timing import Clock
from solrl.types import PromptGroup, Selection, TrainBatch, per_selection

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _modules() -> list[str]:
    """The top-level packages this process has imported (a stand-in loads no model stack)."""
    return sorted({name.partition(".")[0] for name in list(sys.modules)})


def _setup(cpus: float) -> None:
    torch.set_num_threads(max(1, int(cpus)))
    # Payloads of hundreds of MB pass through every call: allocations of 128 KiB and more are
    # mapped and unmapped (glibc's adaptive threshold would keep freed ones in the heap), so a
    # stand-in's memory is what it holds, not what it once received.
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except OSError:  # not glibc: the allocator's own policy
        pass


class Died(BaseException):
    """A virtual worker's injected fault fired: the virtual runtime marks it dead (a real one is
    SIGKILLed)."""


def _die() -> None:
    raise Died


class ScorerDied(Exception):
    """The virtual reward worker a virtual sampler's eval asked died: the virtual runtime fails the
    call with HelperDied, as Ray's runtime does when a real sampler's reward worker dies."""


class _Modeled:
    """What every stand-in shares: its clock, payloads and faults, real or virtual. A virtual one
    (solrl.cluster.virtual runs it in the driver's process) sleeps nothing, carries tiny tensors
    that stand for the real sizes, and raises Died where a real one is killed."""

    virtual = False

    def _model(self, config, name: str, cpus: float, armed: bool = True) -> None:
        if not self.virtual:
            _setup(cpus)
        self.payloads = (SmallPayloads if self.virtual else Payloads)(config)
        self.clock = Clock(config, name, self.virtual)
        self.faults = FaultPlan(config.cluster.faults, name, armed, _die if self.virtual else None)


class StandInSampler(_Modeled, StandInAudit):
    """An explore (NVFP4) or regeneration (BF16) worker of the stand-in model."""

    def __init__(self, config, role: str, name: str, cpus: float = 1):
        self._model(config, name, cpus)
        self.config, self.role, self.name = config, role, name
        self.scores = config.cluster.reward_workers == 0
        ro = config.rollout
        self.sampling, self.precision = (ro.explore, ro.explore_precision) if role == "explore" else (ro.regenerate, ro.regenerate_precision)
        self.version, self.world = 0, config.cluster.learner_ranks

    def info(self) -> dict:
        return {"name": self.name, "role": self.role, "pid": os.getpid(), "version": self.version, "modules": _modules()}

    def _report(self, start: float) -> dict:
        return {"seconds": self.clock.now() - start, "version": self.version, "worker": self.name, "precision": self.precision}

    def _draw(self, images: int) -> None:
        self.clock.sample(images, self.sampling, self.precision)
        if self.scores:
            self.clock.reward(images)

    def explore(self, groups: Sequence[PromptGroup]) -> dict:
        self.faults.reached("explore")
        start = self.clock.now()
        self._draw(sum(len(g.seeds) for g in groups))
        rewards = [reward(g.prompt, s, proxy=True, precision=self.precision) for g in groups for s in g.seeds]
        return self._report(start) | {"rewards": rewards, "seconds_per_group": (self.clock.now() - start) / max(1, len(groups))}

    def explore_images(self, groups: Sequence[PromptGroup]) -> tuple[torch.Tensor, dict]:
        self.faults.reached("explore_images")
        start = self.clock.now()
        n = sum(len(g.seeds) for g in groups)
        self._draw(n)
        images = self.payloads.images(n)
        return images, self._report(start) | {"seconds_per_group": (self.clock.now() - start) / max(1, len(groups)), "bytes": {"images": images.nbytes}}

    def _batch(self, selection: Selection, scored: bool) -> TrainBatch:
        """One regenerated group: its x0, its prompt's conditioning once, its rewards (NaN unscored)."""
        n = len(selection.seeds)
        rewards = [reward(selection.prompt, seed) for seed in selection.seeds] if scored else [float("nan")] * n
        return TrainBatch(
            x0=self.payloads.latents(n),
            cond=self.payloads.conditioning(1),
            rewards=torch.tensor(rewards, dtype=torch.float32),
            groups=torch.full((n,), selection.group.prompt_id, dtype=torch.long),
            seeds=torch.tensor(selection.seeds, dtype=torch.long),
            version=self.version,
            proxy_rewards=torch.tensor(selection.proxy_rewards, dtype=torch.float32),
            cond_rows=torch.zeros(n, dtype=torch.long),
        )

    def regenerate(self, selections: Sequence[Selection]) -> tuple:
        self.faults.reached("regenerate")
        start = self.clock.now()
        (selection,) = selections
        self._draw(len(selection.seeds))
        batch = self._batch(selection, scored=True)
        shards, cond = shards_of(batch, self.world)
        summary = {"rewards": per_selection(batch.rewards, selections), "seconds": self.clock.now() - start, "kept_bytes": kept_bytes(shards, cond)}
        return (*shards, cond, summary | {"version": batch.version, "worker": self.name})

    def regenerate_images(self, selections: Sequence[Selection]) -> tuple:
        self.faults.reached("regenerate_images")
        start = self.clock.now()
        (selection,) = selections
        self._draw(len(selection.seeds))
        batch, images = self._batch(selection, scored=False), self.payloads.images(len(selection.seeds))
        shards, cond = shards_of(batch, self.world)
        return (*shards, cond, images, self._report(start) | {"bytes": {"images": images.nbytes}, "kept_bytes": kept_bytes(shards, cond)})

    def apply_update(self, update: WeightUpdate) -> int:
        self.faults.reached("apply_update")
        update.verify()
        self.clock.apply(self.payloads.adapter_bytes)
        self.version = update.version
        return self.version

    def measure(self, adapter_state, pairs: Sequence[tuple[str, int]], scorer=None) -> dict:
        """The prompt-file world's per-image measures (reward, seconds) of an eval slice."""
        self.faults.reached("measure")
        start = self.clock.now()
        self.clock.sample(len(pairs), self.config.eval.sampling, self.config.eval.precision)
        extra = {}
        if scorer is not None and self.virtual:  # the virtual reward worker (in this process) is asked in place; its time counts as ours
            if scorer.dead_at is not None:
                raise ScorerDied
            try:
                scorer.obj.faults.reached("score_eval")
            except Died:
                raise ScorerDied from None
            self.clock.reward(len(pairs))
        elif self.scores:
            self.clock.reward(len(pairs))
        elif scorer is not None:  # the reward pool scores the eval images, as for a real sampler
            import ray

            images, prompts = self.payloads.images(len(pairs)), [p for p, _ in pairs]
            reply = ray.get(scorer.score_eval.remote(images, prompts))
            extra[SCORER_BYTES] = np.array([payload_bytes(images) + payload_bytes(prompts) + payload_bytes(reply)])
        shift = 0.0 if adapter_state is None else 0.01
        rewards = np.array([reward(p, s) + shift for p, s in pairs])
        return {"reward": rewards, "seconds": np.array([self.clock.now() - start])} | extra

    def grid(self, adapter_state):
        """A placeholder of the run's sample grid: one grey tile per eval caption."""
        from PIL import Image

        self.faults.reached("grid")
        rows = self.config.eval.grid_rows
        return Image.new("RGB", (4 * 64, rows * 64), (128, 128, 128) if adapter_state is None else (160, 160, 160))


class StandInReward(_Modeled):
    """A reward worker of the stand-in model: scores images as long as PickScore would."""

    def __init__(self, config, name: str, cpus: float = 1):
        self._model(config, name, cpus)
        self.name = name

    def info(self) -> dict:
        return {"name": self.name, "role": "reward", "pid": os.getpid(), "modules": _modules()}

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        self.faults.reached("score")
        start = self.clock.now()
        self.clock.reward(len(prompts))
        return {"rewards": [reward(p, i, proxy=True) for i, p in enumerate(prompts)], "seconds": self.clock.now() - start}

    def score_eval(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        self.faults.reached("score_eval")
        return self.score(images, prompts)

    def label(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        """The BF16 rewards of regenerated images (deterministic per prompt and position)."""
        self.faults.reached("label")
        start = self.clock.now()
        self.clock.reward(len(prompts))
        return {"rewards": [reward(p, i) for i, p in enumerate(prompts)], "seconds": self.clock.now() - start}


class StandInLearner(_Modeled):
    """One learner rank of the stand-in model, in a real torch.distributed (gloo) group (a
    virtual rank has none: the virtual runtime keeps its ranks in step)."""

    def __init__(self, config, rank: int, world: int, master_addr: str, master_port: int, cpus: float = 1, armed: bool = True):
        self._model(config, f"learner-{rank}", cpus, armed)
        self.config, self.rank, self.world = config, rank, world
        self.version = 0
        self.collective = world > 1 and not self.virtual
        if self.collective:
            import torch.distributed as dist

            os.environ.setdefault("MASTER_ADDR", master_addr)
            os.environ["MASTER_PORT"] = str(master_port)
            dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(minutes=5))

    def info(self) -> dict:
        return {"rank": self.rank, "pid": os.getpid(), "version": self.version, "modules": _modules()}

    def _fill(self) -> float:
        return 1e-3 * self.version

    def step(self, plan: StepPlan, *pieces) -> tuple[dict, WeightUpdate | None]:
        """Rebuild this rank's rows of each part (as the real rank does), and train them for the
        modeled time: one optimizer step a part."""
        self.faults.reached("step")
        start = self.clock.now()
        shards = plan.shards(self.rank, pieces)
        self.clock.train(sum(len(s) for s in shards))
        self.faults.reached("backward")
        loss = torch.tensor([float(np.mean([s.rewards.nanmean().item() for s in shards]))])
        if self.collective:
            import torch.distributed as dist

            dist.all_reduce(loss)
        self.version += len(shards)
        stats = {"loss": loss.item(), "policy_loss": loss.item(), "kl": 0.0, "kl_weight": 0.0, "grad_norm": 1.0, "old_decay": 0.0, "lr": 0.0, "version": self.version}
        stats["seconds"] = self.clock.now() - start
        sync = self.clock.now()
        self.faults.reached("publish")
        update = self._update()
        stats |= {"publish_seconds": self.clock.now() - sync, "update_bytes": update.nbytes if update is not None else 0}
        return stats, update

    def _update(self) -> WeightUpdate | None:
        return WeightUpdate.build(self.version, self.payloads.adapter(self._fill())) if self.rank == 0 else None

    def weight_update(self) -> tuple[WeightUpdate | None, int]:
        update = self._update()
        return update, update.nbytes if update is not None else 0

    def state(self) -> tuple[dict[str, torch.Tensor] | None, int]:
        if self.rank != 0:
            return None, 0
        tensors = self.payloads.learner_state(self._fill())
        return tensors, tensor_bytes(tensors)

    def load_state(self, tensors: dict[str, torch.Tensor], step: int) -> int:
        self.version = step
        return self.version

    def adapter_states(self) -> tuple:
        if self.rank != 0:
            return None, None, None, 0
        states = tuple(self.payloads.adapter(self._fill()) for _ in range(3))
        return (*states, tensor_bytes(states[2]))

    def close(self) -> None:
        import torch.distributed as dist

        if self.collective and dist.is_initialized():
            dist.destroy_process_group()


class VirtualSampler(StandInSampler):
    virtual = True


class VirtualReward(StandInReward):
    virtual = True


class VirtualLearner(StandInLearner):
    virtual = True
