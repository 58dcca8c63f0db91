"""Elastic worker pools (samplers, rewards), as Ray actors.

Pools are pulled from: the driver hands a task to any idle worker. Growing a pool spawns workers
that receive the current weights before their first task (actor calls run in order); shrinking
retires workers, which finish the task they hold and are then killed. A dead worker is replaced.
A pool may keep spare workers (cluster.spare_rollout_workers): started, sent every weight update,
given no task; a grow or a replacement takes a spare first and starts a new spare behind it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from solrl.cluster.seam import Runtime, WorkerDied
from solrl.cluster.traffic import Traffic
from solrl.cluster.worker_classes import worker_classes
from solrl.config import RunConfig


@dataclass
class Worker:
    name: str
    handle: object  # the runtime's handle
    spawned_at: float
    task: object = None  # the ref of the task it holds, if any
    retiring: bool = False
    busy_seconds: float = 0.0
    ready: object = None  # ref that resolves once the actor has started; None once it has
    first_task_at: float | None = None  # when it was handed its first task
    serving: int = 0  # the policy version it was last sent (samplers): what its next task runs on
    index: int = 0  # its place in spawn order
    spare: bool = False  # kept started and idle for the next grow or replacement
    bundle: int | None = None  # a lent worker's bundle in its learner group's reservation
    # start-up (solrl.cluster.startup.advance): resources -> imports -> weights -> ready
    updated: object = None  # ref of the newest weight update sent while it starts
    phase: str = "resources"
    phase_at: float = 0.0  # when it entered `phase`
    took: dict[str, float] = field(default_factory=dict)  # seconds in each start-up phase passed


@dataclass
class WorkerPool:
    """Workers of one role. Sampler pools hold `update`, the newest WeightUpdate ref (of
    `update_bytes`, at `update_version`) every new worker applies first; a reward pool holds no policy."""

    config: RunConfig
    runtime: Runtime
    role: Literal["explore", "regenerate", "reward"]
    prefix: str  # also the pool's name: rollout, regen, reward, or lent (regeneration beside the learner ranks)
    traffic: Traffic
    workers: dict[str, Worker] = field(default_factory=dict)
    update: object = None
    update_bytes: int = 0
    update_version: int = 0
    restarts: int = 0
    history: list[Worker] = field(default_factory=list)  # every worker spawned, retired or not
    free: dict[str, Worker] = field(default_factory=dict)  # started, staying, holding no task: the next task's takers
    waiting: dict[str, Worker] = field(default_factory=dict)  # spawned, not started yet
    spares: int = 0  # spare workers to keep
    explore_rung: str | None = None  # rollout.precision_control's current rung, which a new explore worker is moved to
    # lent workers: the learner group's current reservation; each worker takes a bundle no live one holds
    reservation: Callable[[], object] | None = None
    _ids: itertools.count = field(default_factory=itertools.count)

    def spawn(self, spare: bool = False) -> Worker:
        c, index = self.config.cluster, next(self._ids)
        name = f"{self.prefix}-{index}"
        options = c.actor_options(self.prefix) | {"max_restarts": 0}
        threads = options["num_cpus"]
        classes, rt = worker_classes(self.config, self.runtime.virtual), self.runtime
        bundle = min(set(range(len(self.workers) + 1)) - {w.bundle for w in self.workers.values()}) if self.reservation else None
        if self.role == "reward":
            handle = rt.spawn(classes.reward, options, self.config, name, threads)
        else:
            slot = None if bundle is None else (self.reservation(), bundle)
            handle = rt.spawn(classes.sampler, options, self.config, self.role, name, threads, slot=slot)
        w = Worker(name, handle, rt.now(), ready=rt.call(handle, "info"), index=index, spare=spare, phase_at=rt.now(), bundle=bundle)
        if self.update is not None:
            w.updated, w.serving = rt.call(handle, "apply_update", self.update), self.update_version
            self.traffic.add("weight_update", self.update_bytes)
        if self.explore_rung is not None:
            rt.call(handle, "set_explore_precision", self.explore_rung)
        self.workers[name] = self.waiting[name] = w
        self.history.append(w)
        return w

    def starting(self) -> list[Worker]:
        """Workers whose actor has not started yet (waiting for resources, or importing)."""
        if self.waiting:
            done, _ = self.runtime.wait([w.ready for w in self.waiting.values()], num_returns=len(self.waiting), timeout=0)
            for w in [w for w in self.waiting.values() if w.ready in done]:
                w.ready = None
                del self.waiting[w.name]
                self.release(w)
        return list(self.waiting.values())

    def assign(self, w: Worker, task) -> None:
        """`w` now holds `task` (the ref the caller waits on)."""
        w.task = task
        self.free.pop(w.name, None)

    def release(self, w: Worker) -> None:
        """`w` holds no task any more: a taker again, unless it is retiring, gone, starting or a spare."""
        w.task = None
        if not w.retiring and not w.spare and w.ready is None and self.workers.get(w.name) is w:
            self.free[w.name] = w

    def resize(self, size: int) -> None:
        """Grow by spawning; shrink by retiring idle workers first, then busy ones."""
        if size < 1:
            raise ValueError(f"a {self.role} pool needs at least 1 worker, got {size}")
        active = [w for w in self.workers.values() if not w.retiring and not w.spare]
        for _ in range(size - len(active)):
            self._take_spare() or self.spawn()
        self.fill_spares()
        for w in sorted(active, key=lambda w: w.task is not None)[: max(0, len(active) - size)]:
            w.retiring = True
            self.free.pop(w.name, None)
            if w.task is None:
                self.remove(w)

    def remove(self, w: Worker) -> None:
        for where in (self.workers, self.free, self.waiting):
            where.pop(w.name, None)
        self.runtime.kill(w.handle)

    def replace(self, w: Worker) -> Worker:
        """Kill (if still alive) and forget `w`, and put a spare, else a fresh worker, in its place."""
        self.remove(w)
        self.restarts += 1
        if w.spare:
            return self.spawn(spare=True)
        taken = self._take_spare() or self.spawn()
        self.fill_spares()
        return taken

    def respawn(self) -> None:
        """Kill every worker and start as many fresh ones (lent workers, after their learner group
        was restarted in a new reservation); not counted as restarts."""
        size = self.size
        for w in list(self.workers.values()):
            self.remove(w)
        for _ in range(size):
            self.spawn()

    def fill_spares(self) -> None:
        for _ in range(self.spares - sum(w.spare for w in self.workers.values())):
            self.spawn(spare=True)

    def _take_spare(self) -> Worker | None:
        """A spare made a worker of the pool (a started one first), or None."""
        spares = sorted((w for w in self.workers.values() if w.spare), key=lambda w: (w.ready is not None, w.index))
        if not spares:
            return None
        w = spares[0]
        w.spare = False
        if w.ready is None:
            self.release(w)
        return w

    def replace_dead(self, w: Worker, log: Callable[[str], None]) -> None:
        """Replace a worker found dead, once, unless the pool has used up cluster.max_restarts."""
        if w.name not in self.workers:
            return  # already replaced: its death was seen elsewhere first
        if self.restarts >= self.config.cluster.max_restarts:
            raise RuntimeError(f"{self.prefix} workers died {self.restarts} times (cluster.max_restarts); giving up")
        log(f"{w.name} died; starting a replacement")
        self.replace(w)

    def idle(self) -> list[Worker]:
        """Workers to hand a task to, in spawn order: started, free and staying (a task given to a
        worker still waiting for resources would wait with it)."""
        self.starting()
        return sorted(self.free.values(), key=lambda w: w.index)

    def idle_or_busy(self) -> list[Worker]:
        """Started workers that stay: those a call can go to."""
        self.starting()
        return [w for w in self.workers.values() if not w.retiring and not w.spare and w.ready is None]

    @property
    def size(self) -> int:
        return sum(not w.retiring and not w.spare for w in self.workers.values())

    @property
    def spare_count(self) -> int:
        return sum(w.spare for w in self.workers.values())

    def shutdown(self) -> None:
        for w in list(self.workers.values()):
            self.remove(w)


def call_spread(
    pools: Sequence[WorkerPool], method: str, calls: list[tuple], log: Callable[[str], None], traffic: Traffic, kind: str, fetched: int = 0, passed: tuple = ()
) -> list:
    """Each call's result, the calls spread over the pools' workers; a call whose worker died
    goes to the next one, and the dead worker is replaced. A call that failed because an actor it
    used died (e.g. an eval's reward worker) raises HelperDied: its worker is fine. Arguments
    (those passed by value, and `fetched` bytes a call's object-ref arguments hold) and results
    count as `kind` traffic; `passed` are the arguments that are refs or handles (not counted)."""
    results, todo = [None] * len(calls), list(range(len(calls)))
    while todo:
        workers = [(pool, w) for pool in pools for w in pool.idle_or_busy()]
        running = [(i, *workers[j % len(workers)]) for j, i in enumerate(todo)]
        refs = [pool.runtime.call(w.handle, method, *calls[i]) for i, pool, w in running]
        for i, _, _ in running:
            traffic.add_payload(kind, [a for a in calls[i] if not any(a is p for p in passed)])
            traffic.add(kind, fetched)
        todo = []
        for (i, pool, w), ref in zip(running, refs):
            try:  # HelperDied (the worker is alive; what it called is not) goes to the caller
                results[i] = pool.runtime.get(ref)
                traffic.add_payload(kind, results[i])
            except WorkerDied:
                pool.replace_dead(w, log)
                todo.append(i)
    return results
