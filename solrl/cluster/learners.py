"""The learner group: N LearnerActor ranks in one Ray placement group, joined by torch.distributed.

Each rank is sent the step's plan and only the shards it trains (solrl.learner.plan). A rank that
dies takes the step with it: the group is restarted from its newest snapshot, the steps trained
since are redone from their inputs (still in the object store), then the failed step. Snapshots
are taken only as often as recovery needs them (cluster.snapshot_every) and when a checkpoint is
written; docs/method.md says why a redone step is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from solrl.cluster.ledger import IterationState, Regenerated
from solrl.cluster.seam import HelperDied, Runtime, WorkerDied
from solrl.cluster.traffic import Traffic
from solrl.cluster.worker_classes import worker_classes
from solrl.config import RunConfig
from solrl.learner.plan import StepPlan
from solrl.nbytes import tensor_bytes
from solrl.types import split_evenly

T = TypeVar("T")
DEFAULT_SNAPSHOT_EVERY = 10  # steps between snapshots when neither snapshot_every nor checkpoint_every is set


@dataclass(frozen=True)
class StepInputs:
    """What each rank is sent for one step: the plan, and per rank the refs it fetches and their
    bytes by kind."""

    plan: StepPlan
    refs: tuple[tuple, ...]
    sizes: tuple[dict[str, int], ...]

    @classmethod
    def of(cls, groups: Sequence[Regenerated], updates: int, world: int) -> StepInputs:
        plan = StepPlan.of([g.labels() for g in groups], updates, world, min(g.version for g in groups))
        parts = split_evenly(list(groups), len(plan.parts))
        refs, sizes = [], []
        for needs in plan.every_rank_needs():
            mine, size = [], {"samples": 0, "conditioning": 0}
            for p, g, residue in needs:
                regen = parts[p][g]
                mine += [regen.shards[residue], regen.cond]
                size["samples"] += regen.shard_bytes[residue]
                size["conditioning"] += regen.cond_bytes
            refs.append(tuple(mine))
            sizes.append(size)
        return cls(plan, tuple(refs), tuple(sizes))


@dataclass(frozen=True)
class LearnerStep:
    """A step in flight: its inputs, and each rank's (stats, update) refs."""

    inputs: StepInputs
    calls: list


@dataclass(frozen=True)
class Launched:
    """A learner step the driver started on an iteration (the moment its last group was
    regenerated), from which policy version; `step` is None when every group was dropped."""

    iteration: int
    state: IterationState
    step: LearnerStep | None
    start: float
    version: int


class LearnerGroup:
    """N LearnerActor ranks in one placement group, joined by torch.distributed."""

    def __init__(self, runtime: Runtime, config: RunConfig, traffic: Traffic, log: Callable[[str], None] = print):
        self.runtime, self.config, self.log, self.traffic = runtime, config, log, traffic
        self.generation = 0  # restarts so far; injected faults arm only the first group
        self.saved, self.saved_bytes, self.saved_version = None, 0, 0  # the newest snapshot (None: the fresh start)
        self.since: list[StepInputs] = []  # steps trained after the snapshot, redone on a restart
        self._adapters: tuple[int, dict, int] | None = None  # (version, rank 0's adapter refs, bytes of one)
        c = config.cluster
        self.snapshot_every = c.snapshot_every or c.checkpoint_every or DEFAULT_SNAPSHOT_EVERY
        self.ranks: list = []  # none until launch(): a run that never got its reservation has none to kill
        self.on_restart: Callable[[], None] = lambda: None  # after a restart: the lent workers move to the new reservation
        self.reserve()

    def reserve(self):
        """Ask for the ranks' reservation (a placement group on Ray); the ref resolves once the
        cluster grants it."""
        c = self.config.cluster
        self.bundle = {k: v for k, v in c.learner_bundle().items() if v}
        self.pg = self.runtime.reserve([self.bundle] * c.learner_ranks)
        self.ready = self.pg.ready()
        return self.ready

    def launch(self) -> None:
        """Start the ranks in the granted placement group (after `ready`)."""
        c = self.config.cluster
        n = c.learner_ranks
        options = c.actor_options("learner")
        rt = self.runtime
        master = rt.rendezvous(self.pg)
        cls = worker_classes(self.config, rt.virtual).learner
        args = (master[0], master[1], options["num_cpus"], self.generation == 0)
        self.ranks = [rt.spawn(cls, options | {"max_restarts": 0}, self.config, i, n, *args, slot=(self.pg, i)) for i in range(n)]

    def call(self, method: str, *args, returns: int = 1) -> list:
        """Start `method` on every rank (collectives need all of them); returns the refs."""
        return [self.runtime.call(r, method, *args, returns=returns) for r in self.ranks]

    def pids(self) -> list[int]:
        return [i["pid"] for i in self.runtime.get(self.call("info"))]

    def shutdown(self) -> None:
        for r in self.ranks:
            self.runtime.kill(r)
        self.runtime.release(self.pg)

    def restart(self) -> None:
        """Kill every rank and start a fresh group (the caller restores a checkpoint)."""
        self.shutdown()
        self.generation += 1
        self.runtime.get(self.reserve())
        self.launch()
        self.on_restart()

    def step(self, groups: Sequence[Regenerated]) -> LearnerStep:
        """Start one step over regenerated groups (in the order they were drawn) on every rank."""
        c = self.config
        inputs = StepInputs.of(groups, c.train.updates_per_iteration, c.cluster.learner_ranks)
        return LearnerStep(inputs, self._start(inputs))

    def _start(self, inputs: StepInputs) -> list:
        for size in inputs.sizes:
            self.traffic.add_sizes(size)
        self.traffic.add_payload("rewards", inputs.plan, receivers=len(self.ranks))
        return [self.runtime.call(r, "step", inputs.plan, *refs, returns=2) for r, refs in zip(self.ranks, inputs.refs)]

    def progress(self, step: LearnerStep) -> tuple[bool, list]:
        """Whether `step` has ended on every rank, or failed on one (finish() then recovers), and
        the refs of the ranks still running; never waits."""
        refs = [c[0] for c in step.calls]
        ready, running = self.runtime.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready if running else ():
            try:
                self.runtime.get(ref)
            except Exception:  # noqa: BLE001 (a rank's failure, whatever it is, is finish()'s to handle)
                return True, running
        return not running, running

    def finish(self, step: LearnerStep, version: int, checkpoint_due: bool) -> tuple[dict, object]:
        """Wait for a step; if a rank died, restart the group, bring it back to where the step
        began and redo it. Returns (stats, rank 0's WeightUpdate ref). Takes a snapshot when
        recovery needs one, unless a checkpoint (which takes its own) is due."""
        calls = step.calls

        def attempt(restarted: bool) -> list:
            nonlocal calls
            if restarted:
                calls = self._start(step.inputs)
            return self._gather([c[0] for c in calls])

        stats = self._until_done(attempt, f"in the step from version {version}")
        self.traffic.add_payload("control", stats)
        self.since.append(step.inputs)
        if len(self.since) >= self.snapshot_every and not checkpoint_due:
            self.snapshot(int(stats[0]["version"]), "learner_state")
        return stats[0], calls[0][1]

    def _until_done(self, attempt: Callable[[bool], T], what: str) -> T:
        """`attempt(restarted)` until it succeeds: after a rank dies, the group is restarted and
        brought back to where it was (its newest snapshot, then every step since) first."""
        restarted = False
        for _ in range(self.config.cluster.max_restarts + 1):
            try:
                if restarted:
                    self._recover()
                return attempt(restarted)
            except (WorkerDied, GroupFailed):
                self.log(f"a learner rank died {what}; restarting the group and redoing the steps since its snapshot")
                self.restart()
                restarted = True
        raise RuntimeError(f"the learner group died {self.generation} times (cluster.max_restarts); giving up")

    def _recover(self) -> None:
        """A restarted group back at its newest snapshot, then each step trained since redone."""
        if self.saved is not None:
            self.load_state(self.saved, self.saved_version)
        for inputs in self.since:
            self._gather([c[0] for c in self._start(inputs)])  # the weights these published are already served

    def load_state(self, state, step: int) -> None:
        """Every rank restores `state` (a ref or the tensors) at optimizer step `step`."""
        self.traffic.add("learner_state", self.saved_bytes, receivers=len(self.ranks))
        self.runtime.get(self.call("load_state", state, step))

    def snapshot(self, version: int, kind: str) -> None:
        """Keep the group's full state (rank 0's) in the object store: the point a restart
        begins at. `kind` counts it: learner_state when only kept, checkpoint when the driver
        fetches it to write a checkpoint."""
        def attempt(_: bool) -> tuple:
            refs = self.call("state", returns=2)
            return refs[0][0], self._gather([size for _, size in refs])[0]

        self.saved, self.saved_bytes = self._until_done(attempt, f"while its state at version {version} was taken")
        self.saved_version, self.since = version, []
        self.traffic.add(kind, self.saved_bytes)

    def _gather(self, refs: list) -> list:
        """Every rank's result, failing as soon as one call fails: the survivors would wait in a
        collective for a dead rank until the process group's timeout. A survivor's collective may
        fail first instead (gloo: connection reset by the dead peer), so a failed call whose rank
        is alive counts as the group's failure when another rank is dead or no longer answers."""
        rt, waiting = self.runtime, list(refs)
        while waiting:
            ready, waiting = rt.wait(waiting, num_returns=1)
            try:
                rt.get(ready)
            except WorkerDied:
                raise
            except Exception as exc:
                if not isinstance(exc, HelperDied) and self._intact():
                    raise
                raise GroupFailed(f"a learner rank died: {exc}") from exc
        return rt.get(refs)

    def _intact(self, timeout_s: float = 60.0) -> bool:
        """Whether every rank is alive and answers (a rank stuck in a collective does not)."""
        try:
            self.runtime.get(self.call("info"), timeout=timeout_s)
            return True
        except (WorkerDied, TimeoutError):
            return False

    def restore(self, tensors: dict, step: int) -> None:
        """Every rank loads a checkpoint's state (a resume); it is also the group's snapshot."""
        self.saved, self.saved_bytes, self.saved_version, self.since = self.runtime.put(tensors), tensor_bytes(tensors), step, []
        self.load_state(self.saved, step)

    def weight_update(self) -> tuple[object, int]:
        """The current rollout policy as a WeightUpdate ref (rank 0's) and its bytes (collective)."""
        update, nbytes = self.call("weight_update", returns=2)[0]
        return update, self.runtime.get(nbytes)

    def adapters(self, version: int) -> tuple[dict, int]:
        """Rank 0's policy, old and EMA adapters as object refs (one object each, made once per
        policy version; the driver passes them on without fetching them) and the bytes of one."""
        if self._adapters is None or self._adapters[0] != version:
            refs = self.call("adapter_states", returns=4)[0]
            self._adapters = (version, dict(zip(("policy", "old", "ema"), refs[:3])), self.runtime.get(refs[3]))
        return self._adapters[1], self._adapters[2]

    def checkpoint_state(self, version: int):
        """The state at `version` for a checkpoint (a snapshot, taken now unless one is at hand)."""
        if self.saved is None or self.saved_version != version:
            self.snapshot(version, "checkpoint")
        else:  # a snapshot kept for recovery, now fetched by the driver too
            self.traffic.add("checkpoint", self.saved_bytes)
        return self.saved


class GroupFailed(RuntimeError):
    """A rank of the group died or stopped answering: the group must be restarted."""
