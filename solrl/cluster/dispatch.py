"""Handing work to pool workers: one queue per stage, a table of stages, and the tasks in flight.

A stage is one actor call on one pool. Its outputs stay in the object store; the last is a small
summary (with the worker's busy seconds) that the dispatcher waits on. A stage with a `then`
passes its outputs on as the next stage's inputs (samplers that hold no reward hand their images
to the reward pool); a stage without one hands them back to the caller.

A task whose worker died is queued again at the front of its stage with the same inputs, which
are still in the object store; a task whose inputs were lost (their node died) is redone from the
stage that first made them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.exceptions import ObjectLostError, RayActorError

from solrl.cluster.pools import Worker, WorkerPool
from solrl.cluster.traffic import Traffic


@dataclass(frozen=True)
class Stage:
    pool: str  # rollout | regen | reward
    method: str  # the actor method it calls
    returns: int  # how many outputs the method has; the last is its summary
    then: str | None  # the stage its outputs feed, None when they are done
    origin: str  # the stage that redoes the work when the task's inputs are lost
    summary: str  # the traffic kind of the summary the driver receives (solrl.cluster.traffic)
    prompts: bool = False  # the call takes the work's prompts rather than the work itself


# samplers score their own samples
OWN_REWARD = {
    "explore": Stage("rollout", "explore", 1, None, "explore", "explore_results"),
    "regen": Stage("regen", "regenerate", 2, None, "regen", "rewards"),
}
# cluster.reward_workers > 0: samplers render, the reward pool scores
REWARD_POOL = {
    "explore": Stage("rollout", "explore_images", 2, "score_explore", "explore", "control"),
    "regen": Stage("regen", "regenerate_images", 3, "score_regen", "regen", "control"),
    "score_explore": Stage("reward", "score", 1, None, "explore", "rewards", prompts=True),
    "score_regen": Stage("reward", "label", 2, None, "regen", "rewards"),
}


@dataclass(frozen=True)
class Job:
    """Work waiting for a stage: prompt groups (explore) or one Selection (regen), the refs of
    the previous stage's outputs it consumes, and that stage's summary."""

    work: tuple
    inputs: tuple = ()
    report: dict | None = None


@dataclass
class Task:
    stage: str
    job: Job
    worker: Worker
    outputs: tuple


@dataclass(frozen=True)
class Done:
    """A finished chain of stages: the work, the last stage's outputs (refs) and summary, and the
    first stage's summary (which sampler made it, at which policy version)."""

    stage: str
    work: tuple
    outputs: tuple
    summary: dict
    origin_report: dict | None


class Dispatcher:
    def __init__(self, pools: dict[str, WorkerPool], stages: dict[str, Stage], groups_per_task: int, log: Callable[[str], None], traffic: Traffic):
        self.pools, self.stages, self.per_task, self.log, self.traffic = pools, stages, groups_per_task, log, traffic
        self.queues: dict[str, deque[Job]] = {name: deque() for name in stages}
        self.pending: dict = {}  # summary ref -> Task

    def put(self, stage: str, work: tuple) -> None:
        """Queue fresh work: one job per prompt group for explore (tasks take groups_per_task)."""
        if stage == "explore":
            self.queues[stage].extend(Job((g,)) for g in work)
        else:
            self.queues[stage].append(Job(work))

    def depths(self) -> dict[str, int]:
        """Queue depths under the names metrics use."""
        q = {name: len(jobs) for name, jobs in self.queues.items()}
        depths = {"explore": q["explore"], "regenerate": q["regen"]}
        return depths | ({"score": q["score_explore"] + q["score_regen"]} if "score_explore" in q else {})

    def dispatch(self) -> None:
        """Give every idle worker a task from its stages' queues."""
        for name, stage in self.stages.items():
            queue = self.queues[name]
            for w in self.pools[stage.pool].idle():
                if not queue:
                    break
                jobs = [queue.popleft() for _ in range(min(self.per_task if name == "explore" else 1, len(queue)))]
                job = Job(tuple(x for j in jobs for x in j.work), jobs[0].inputs, jobs[0].report)
                payload = [g.prompt for g in job.work for _ in g.seeds] if stage.prompts else list(job.work)
                self.traffic.add_payload("control", payload)
                if job.inputs:  # the previous stage's outputs, which the worker fetches
                    self.traffic.add_sizes(job.report["bytes"])
                method = getattr(w.handle, stage.method)
                outputs = method.options(num_returns=stage.returns).remote(*job.inputs, payload)
                outputs = tuple(outputs) if stage.returns > 1 else (outputs,)
                w.task = outputs[-1]
                w.first_task_at = w.first_task_at or time.perf_counter()
                self.pending[outputs[-1]] = Task(name, job, w, outputs)

    def collect(self) -> list[Done]:
        """Wait for one task to end; pass its outputs on or return them finished. A dead
        worker is replaced and its task queued again."""
        if not self.pending:  # every worker that could take the work is still starting (e.g. a replacement)
            starting = [w.ready for pool in self.pools.values() for w in pool.starting()]
            if not starting:
                raise RuntimeError("no work in flight and the iteration is incomplete; every pool is empty or retiring")
            ray.wait(starting, num_returns=1, timeout=0.5)
            return []
        # a timeout, so the driver also answers control requests while every task runs long
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
        done = []
        for ref in ready:
            task = self.pending.pop(ref)
            w, stage = task.worker, self.stages[task.stage]
            w.task = None
            try:
                summary = ray.get(ref)
            except RayActorError:
                self._worker_died(task)
                continue
            except ObjectLostError:  # the inputs vanished with their node: redo the work
                self.log(f"{task.stage} input of {w.name} was lost; re-queueing its work")
                self._redo(task)
                summary = None
            if summary is not None:
                self.traffic.add_payload(stage.summary, summary)
                w.busy_seconds += summary["seconds"]
                origin = task.job.report if task.job.inputs else summary
                if stage.then is not None:
                    self.queues[stage.then].append(Job(task.job.work, task.outputs[:-1], summary))
                else:
                    done.append(Done(task.stage, task.job.work, task.outputs[:-1], summary, origin))
            if w.retiring:
                self.pools[stage.pool].remove(w)
        return done

    def _redo(self, task: Task) -> None:
        origin = self.stages[task.stage].origin
        jobs = [Job((g,)) for g in task.job.work] if origin == "explore" else [Job(task.job.work)]
        self.queues[origin].extendleft(reversed(jobs))

    def _worker_died(self, task: Task) -> None:
        pool, w = self.pools[self.stages[task.stage].pool], task.worker
        self.log(f"{w.name} died; re-queueing its {task.stage} work")
        if task.job.inputs:  # a later stage: its inputs are still in the object store
            self.queues[task.stage].appendleft(task.job)
        else:
            self._redo(task)
        if w.retiring:
            pool.workers.pop(w.name, None)
        else:
            pool.replace_dead(w, self.log)
