"""The learner group: N LearnerActor ranks in one Ray placement group, joined by
torch.distributed. A rank that dies takes the step with it; the group is restarted from the
state it had before the step (kept in the object store after every step) and the step redone."""

from __future__ import annotations

from collections.abc import Callable

import ray
from ray.exceptions import RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from solrl.cluster.traffic import Traffic
from solrl.cluster.worker_classes import worker_classes
from solrl.config import RunConfig


class LearnerGroup:
    """N LearnerActor ranks in one placement group, joined by torch.distributed."""

    def __init__(self, config: RunConfig, traffic: Traffic, log: Callable[[str], None] = print):
        self.config, self.log, self.traffic = config, log, traffic
        self.generation = 0  # restarts so far; injected faults arm only the first group
        self.saved = None  # ref to rank 0's full state after the last completed step
        self.saved_bytes = 0
        self.reserve()

    def reserve(self) -> ray.ObjectRef:
        """Ask for the ranks' placement group; the ref resolves once the cluster grants it."""
        c = self.config.cluster
        self.bundle = {k: v for k, v in c.worker_resources("learner").items() if v}
        self.pg = placement_group([self.bundle] * c.learner_ranks, strategy="PACK")
        self.ready = self.pg.ready()
        return self.ready

    def launch(self) -> None:
        """Start the ranks in the granted placement group (after `ready`)."""
        c = self.config.cluster
        n = c.learner_ranks
        options = c.actor_options("learner")
        master = ray.get(_rendezvous.options(scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, 0)).remote())
        self.ranks = [
            ray.remote(worker_classes(self.config).learner)
            .options(**options, max_restarts=0, scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i))
            .remote(self.config, i, n, master[0], master[1], options["num_cpus"], self.generation == 0)
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
        self.generation += 1
        ray.get(self.reserve())
        self.launch()

    def step(self, batches: list, sizes: list[dict[str, int]]) -> list:
        """Start one step on every rank over the batch refs (of `sizes` bytes by kind); returns the
        (stats, update) ref pairs."""
        for each in sizes:
            self.traffic.add_sizes(each, receivers=len(self.ranks))
        return [r.step.options(num_returns=2).remote(*batches) for r in self.ranks]

    def load_state(self, state, step: int) -> None:
        """Every rank restores `state` (a ref or the tensors) at optimizer step `step`."""
        self.traffic.add("learner_state", self.saved_bytes, receivers=len(self.ranks))
        ray.get(self.call("load_state", state, step))

    def snapshot(self) -> None:
        """Keep the group's full state in the object store (rank 0's), for a restart or a checkpoint."""
        refs = [r.state.options(num_returns=2).remote() for r in self.ranks]
        self.saved = refs[0][0]
        self.saved_bytes = _gather([size for _, size in refs])[0]
        self.traffic.add("learner_state", self.saved_bytes)

    def finish(self, calls: list, batches: list, version: int) -> tuple[dict, object]:
        """Wait for a step; if a rank died, restart the group from the state it had before the
        step (or the fresh start) and redo it. Returns (stats, rank 0's WeightUpdate ref)."""
        for _ in range(self.config.cluster.max_restarts + 1):
            try:
                stats = _gather([c[0] for c in calls])
                self.traffic.add_payload("control", stats)
                stats = stats[0]
                break
            except RayActorError:
                self.log(f"a learner rank died; restarting the group at version {version} and redoing the step")
                self.restart()
                if self.saved is not None:
                    self.load_state(self.saved, version)
                calls = self.step(batches, [])
        else:
            raise RuntimeError(f"the learner group died {self.generation} times (cluster.max_restarts); giving up")
        self.snapshot()
        return stats, calls[0][1]


def _gather(refs: list) -> list:
    """ray.get that fails as soon as any rank fails: the survivors would wait in a collective
    for the dead rank until the process group's timeout."""
    waiting = list(refs)
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        ray.get(ready)  # raises RayActorError for a dead rank
    return ray.get(refs)


@ray.remote(num_cpus=0)
def _rendezvous() -> tuple[str, int]:
    """An address and free port on the node that will host rank 0."""
    from solrl.learner.rank import free_port

    host = ray.util.get_node_ip_address()
    return host, free_port(host)
