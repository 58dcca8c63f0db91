"""Elastic worker pools (samplers, rewards) and the learner group, as Ray actors.

Pools are pulled from: the driver hands a task to any idle worker. Growing a pool spawns workers
that receive the current weights before their first task (actor calls run in order); shrinking
retires workers, which finish the task they hold and are then killed. A dead worker is replaced.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from solrl.cluster.actors import LearnerActor, RewardActor, SamplerActor
from solrl.config import RunConfig


@dataclass
class Worker:
    name: str
    handle: ray.actor.ActorHandle
    task: object = None  # the ObjectRef of the task it holds, if any
    retiring: bool = False
    busy_seconds: float = 0.0


@dataclass
class WorkerPool:
    """Workers of one role. Sampler pools hold `update`, the WeightUpdate ref every new worker
    applies first; a reward pool holds no policy."""

    config: RunConfig
    role: Literal["explore", "regenerate", "reward"]
    prefix: str
    workers: dict[str, Worker] = field(default_factory=dict)
    update: object = None
    restarts: int = 0
    _ids: itertools.count = field(default_factory=itertools.count)

    def spawn(self) -> Worker:
        c = self.config.cluster
        name = f"{self.prefix}-{next(self._ids)}"
        options = {"num_cpus": c.cpus_per_worker, "num_gpus": c.gpus_per_worker, "max_restarts": 0}
        if self.role == "reward":
            handle = ray.remote(RewardActor).options(**options).remote(self.config, name, c.cpus_per_worker)
        else:
            handle = ray.remote(SamplerActor).options(**options).remote(self.config, self.role, name, c.cpus_per_worker)
        if self.update is not None:
            handle.apply_update.remote(self.update)
        self.workers[name] = Worker(name, handle)
        return self.workers[name]

    def resize(self, size: int) -> None:
        """Grow by spawning; shrink by retiring idle workers first, then busy ones."""
        if size < 1:
            raise ValueError(f"a {self.role} pool needs at least 1 worker, got {size}")
        active = [w for w in self.workers.values() if not w.retiring]
        for _ in range(size - len(active)):
            self.spawn()
        for w in sorted(active, key=lambda w: w.task is not None)[: max(0, len(active) - size)]:
            w.retiring = True
            if w.task is None:
                self.remove(w)

    def remove(self, w: Worker) -> None:
        self.workers.pop(w.name, None)
        ray.kill(w.handle, no_restart=True)

    def replace(self, w: Worker) -> Worker:
        """Kill (if still alive) and forget `w`, and spawn a fresh worker in its place."""
        self.remove(w)
        self.restarts += 1
        return self.spawn()

    def idle(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.task is None and not w.retiring]

    @property
    def size(self) -> int:
        return sum(not w.retiring for w in self.workers.values())

    def shutdown(self) -> None:
        for w in list(self.workers.values()):
            self.remove(w)


class LearnerGroup:
    """N LearnerActor ranks in one placement group, joined by torch.distributed."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.start()

    def start(self) -> None:
        c = self.config.cluster
        n = c.learner_ranks
        bundle = {"CPU": c.cpus_per_worker} | ({"GPU": c.gpus_per_worker} if c.gpus_per_worker else {})
        self.pg = placement_group([bundle] * n, strategy="PACK")
        ray.get(self.pg.ready())
        master = ray.get(_rendezvous.options(scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, 0)).remote())
        self.ranks = [
            ray.remote(LearnerActor)
            .options(
                num_cpus=c.cpus_per_worker,
                num_gpus=c.gpus_per_worker,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i),
            )
            .remote(self.config, i, n, master[0], master[1], c.cpus_per_worker)
            for i in range(n)
        ]

    def call(self, method: str, *args) -> list:
        """Start `method` on every rank (collectives need all of them); returns the refs."""
        return [getattr(r, method).remote(*args) for r in self.ranks]

    def pids(self) -> list[int]:
        return [i["pid"] for i in ray.get(self.call("info"))]

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r, no_restart=True)
        remove_placement_group(self.pg)

    def restart(self) -> None:
        """Kill every rank and start a fresh group (the caller restores a checkpoint)."""
        self.shutdown()
        self.start()


@ray.remote(num_cpus=0)
def _rendezvous() -> tuple[str, int]:
    """An address and free port on the node that will host rank 0."""
    from solrl.learner.group import free_port

    host = ray.util.get_node_ip_address()
    return host, free_port(host)
