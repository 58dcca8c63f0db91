"""Handing work to pool workers: one queue per stage, a table of stages, and the tasks in flight.

A stage is one actor call on one pool. Its outputs stay in the object store; the last is a small
summary (with the worker's busy seconds) that the dispatcher waits on. A stage with a `then`
passes its last `passes` outputs on as the next stage's inputs (samplers that hold no reward hand
their images to the reward pool) and keeps the others for the caller (a regenerated group's
shards and conditioning, which go to the learners without visiting the reward worker).

Eval slices (solrl.cluster.eval_tasks) go to the samplers the stages left idle, after them.

A task whose worker died is queued again at the front of its stage with the same inputs, which
are still in the object store; a task whose inputs were lost (their node died) is redone from the
stage that first made them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from solrl.cluster.eval_tasks import EvalSlice
from solrl.cluster.pools import Worker, WorkerPool
from solrl.cluster.seam import HelperDied, InputLost, Runtime, WorkerDied
from solrl.cluster.slices import slices
from solrl.cluster.traffic import Traffic
from solrl.learner.weight_sync import WeightSyncError
from solrl.nbytes import SCORER_BYTES


@dataclass(frozen=True)
class Stage:
    pool: str  # rollout | regen | reward
    method: str  # the actor method it calls
    returns: int  # how many outputs the method has; the last is its summary
    then: str | None  # the stage its outputs feed, None when they are done
    origin: str  # the stage that redoes the work when the task's inputs are lost
    summary: str  # the traffic kind of the summary the driver receives (solrl.cluster.traffic)
    prompts: bool = False  # the call takes the work's prompts rather than the work itself
    passes: int = 0  # with a `then`: how many of the last outputs go on (their traffic kind: "images")


def stages(reward_pool: bool, learner_ranks: int, k: int, audit: bool = False) -> dict[str, Stage]:
    """The stage table: a regenerated group of k samples is stored as one x0 shard per learner
    rank that gets rows of it (min(k, ranks)) and its conditioning (solrl.learner.plan), then its
    summary. With `audit` (rollout.precision_control, solrl.cluster.audit_desk), the explore
    audit's previews go to the rollout pool before its explore work (they are few, and an
    iteration's row waits for them) and its regenerations to the regeneration pool after the
    training's."""
    kept = min(learner_ranks, k) + 1
    if not reward_pool:  # samplers score their own samples
        table = {
            "explore": Stage("rollout", "explore", 1, None, "explore", "explore_results"),
            "regen": Stage("regen", "regenerate", kept + 1, None, "regen", "rewards"),
        }
        checks = {
            "preview": Stage("rollout", "preview", 1, None, "preview", "explore_results"),
            "audit": Stage("regen", "audit", 1, None, "audit", "rewards"),
        }
    else:  # cluster.reward_workers > 0: samplers render, the reward pool scores
        table = {
            "explore": Stage("rollout", "explore_images", 2, "score_explore", "explore", "control", passes=1),
            "regen": Stage("regen", "regenerate_images", kept + 2, "score_regen", "regen", "control", passes=1),
            "score_explore": Stage("reward", "score", 1, None, "explore", "rewards", prompts=True),
            "score_regen": Stage("reward", "label", 1, None, "regen", "rewards", prompts=True),
        }
        checks = {
            "preview": Stage("rollout", "preview_images", 2, "score_preview", "preview", "control", passes=1),
            "audit": Stage("regen", "audit_images", 2, "score_audit", "audit", "control", passes=1),
            "score_preview": Stage("reward", "score", 1, None, "preview", "rewards", prompts=True),
            "score_audit": Stage("reward", "label", 1, None, "audit", "rewards", prompts=True),
        }
    return {"preview": checks.pop("preview")} | table | checks if audit else table


@dataclass(frozen=True)
class Job:
    """Work waiting for a stage: prompt groups (explore) or one Selection (regen), the refs of
    the previous stage's outputs it consumes, that stage's summary, and the outputs it kept."""

    work: tuple
    inputs: tuple = ()
    report: dict | None = None
    kept: tuple = ()


@dataclass
class Task:
    stage: str
    job: Job
    worker: Worker
    outputs: tuple
    version: int  # the policy version the worker runs it on (the newest it was sent)
    pool: str
    started: float = 0.0
    scorer: Worker | None = None  # an eval slice's reward worker


@dataclass(frozen=True)
class Done:
    """A finished chain of stages: the work, the outputs kept along it (refs), the last stage's
    summary, and the first stage's (which sampler made it, at which policy version)."""

    stage: str
    work: tuple
    outputs: tuple
    summary: dict
    origin_report: dict | None


class Dispatcher:
    def __init__(self, runtime: Runtime, pools: dict[str, WorkerPool], stages: dict[str, Stage], groups_per_task: int, log: Callable[[str], None], traffic: Traffic):
        self.runtime, self.pools, self.stages, self.per_task, self.log, self.traffic = runtime, pools, stages, groups_per_task, log, traffic
        self.queues: dict[str, deque[Job]] = {name: deque() for name in stages}
        self.evals: deque[EvalSlice] = deque()
        self.pending: dict = {}  # summary ref -> Task
        self.poll_s: float | None = 0.5  # how long collect waits before returning empty-handed (None: until a task ends)
        self.watch: list = []  # other refs whose end also wakes collect (a learner step's ranks)
        self.woken = True  # whether a watched ref has ended since the caller last looked
        # the newest iteration whose regenerations the lent workers may take now, or None (the driver's rule)
        self.lending: Callable[[], int | None] = lambda: None
        self.lent_tasks = 0  # regeneration tasks the lent workers took

    def put(self, stage: str, work: tuple, pieces: int = 1) -> None:
        """Queue fresh work: for explore, one job per slice of a prompt group (`pieces` a group,
        solrl.cluster.slices; tasks take groups_per_task jobs)."""
        if stage == "explore":
            self.queues[stage].extend(Job((s,)) for g in work for s in slices(g, pieces))
        else:
            self.queues[stage].append(Job(work))

    def depths(self) -> dict[str, int]:
        """Queue depths under the names metrics use."""
        q = {name: len(jobs) for name, jobs in self.queues.items()}
        depths = {"explore": q["explore"], "regenerate": q["regen"]}
        return depths | ({"score": q["score_explore"] + q["score_regen"]} if "score_explore" in q else {})

    def dispatch(self) -> None:
        """Give every idle worker a task from its stages' queues; the regeneration queue's
        leftovers to the workers lent beside the learners, but only groups of iterations up to
        the one `lending()` names (at lag 1 the one the idle learners wait for, whose step needs
        them anyway: a lent task of a later iteration would hold that step up once it is ready)."""
        for name, stage in self.stages.items():
            lend = self.lending() if name == "regen" and "lent" in self.pools else None
            for pool in (stage.pool, "lent") if lend is not None else (stage.pool,):
                queue = self.queues[name]
                for w in self.pools[pool].idle() if queue else ():
                    if not queue or pool == "lent" and queue[0].work[0].group.iteration > lend:  # FIFO: older iterations first
                        break
                    self._start(name, stage, pool, w, [queue.popleft() for _ in range(min(self.per_task if name == "explore" else 1, len(queue)))])
        self._dispatch_evals()

    def _start(self, name: str, stage: Stage, pool: str, w: Worker, jobs: list[Job]) -> None:
        job = Job(tuple(x for j in jobs for x in j.work), jobs[0].inputs, jobs[0].report, jobs[0].kept)
        payload = [g.prompt for g in job.work for _ in g.seeds] if stage.prompts else list(job.work)
        self.traffic.add_payload("control", payload)
        if job.inputs:  # the previous stage's outputs, which the worker fetches
            self.traffic.add("images", job.report["bytes"]["images"])
        outputs = self.runtime.call(w.handle, stage.method, *job.inputs, payload, returns=stage.returns)
        outputs = outputs if stage.returns > 1 else (outputs,)
        self.pools[pool].assign(w, outputs[-1])
        w.first_task_at = w.first_task_at or self.runtime.now()
        self.pending[outputs[-1]] = Task(name, job, w, outputs, w.serving, pool)
        self.lent_tasks += pool == "lent"

    def lent_busy(self) -> bool:
        """Whether a lent worker holds a task (a learner step waits for it: they share a GPU)."""
        return any(task.pool == "lent" for task in self.pending.values())

    def _dispatch_evals(self) -> None:
        """Give eval slices to the samplers the stages left idle."""
        for pool in ("rollout", "regen") if self.evals else ():
            for w in self.pools[pool].idle():
                if not self.evals:
                    return
                piece = self.evals.popleft()
                scorer = next(iter(self.pools["reward"].workers.values())) if "reward" in self.pools else None
                ref = self.runtime.call(w.handle, "measure", piece.eval.adapter, list(piece.pairs), scorer and scorer.handle)
                self.traffic.add_payload("eval", list(piece.pairs))
                self.traffic.add("eval", piece.eval.adapter_bytes)
                self.pools[pool].assign(w, ref)
                self.pending[ref] = Task("eval", Job((piece,)), w, (ref,), w.serving, pool, self.runtime.now(), scorer)

    def collect(self) -> list[Done]:
        """Wait for one task to end; pass its outputs on or return them finished. A dead
        worker is replaced and its task queued again."""
        if not self.pending:  # every worker that could take the work is still starting (e.g. a replacement)
            starting = [w.ready for pool in self.pools.values() for w in pool.starting()]
            if not starting and not self.watch:
                raise RuntimeError("no work in flight and the iteration is incomplete; every pool is empty or retiring")
            ready, _ = self.runtime.wait(starting + self.watch, num_returns=1, timeout=0.5 if starting else self.poll_s)
            self.woken = self.woken or any(ref in self.watch for ref in ready)
            return []
        # a timeout, so the driver also answers control requests while every task runs long
        ready, _ = self.runtime.wait([*self.pending, *self.watch], num_returns=1, timeout=self.poll_s)
        done = []
        for ref in ready:
            task = self.pending.pop(ref, None)
            if task is None:  # a watched ref: the caller looks at it
                self.woken = True
                continue
            w = task.worker
            self.pools[task.pool].release(w)
            if task.stage == "eval":
                self._eval_done(task, ref)
                continue
            stage = self.stages[task.stage]
            try:
                summary = self.runtime.get(ref)
            except WorkerDied:
                self._worker_died(task)
                continue
            except InputLost:  # the inputs vanished with their node: redo the work
                self.log(f"{task.stage} input of {w.name} was lost; re-queueing its work")
                self._redo(task)
                summary = None
            if summary is not None:
                if "version" in summary and summary["version"] != task.version:  # samplers' results; a reward worker serves no policy
                    raise WeightSyncError(f"{w.name} ran a {task.stage} task on policy version {summary['version']}, but was last sent {task.version}")
                self.traffic.add_payload(stage.summary, summary)
                w.busy_seconds += summary["seconds"]
                origin = task.job.report if task.job.inputs else summary
                outputs = task.job.kept + task.outputs[:-1]
                if stage.then is not None:
                    split = len(outputs) - stage.passes
                    self.queues[stage.then].append(Job(task.job.work, outputs[split:], summary, outputs[:split]))
                else:
                    done.append(Done(task.stage, task.job.work, outputs, summary, origin))
            if w.retiring:
                self.pools[task.pool].remove(w)
        return done

    def _eval_done(self, task: Task, ref) -> None:
        piece, w = task.job.work[0], task.worker
        try:
            measures = self.runtime.get(ref)
        except WorkerDied:
            self._worker_died(task)
            return
        except HelperDied:  # its reward worker died while scoring: replace it, redo the slice (same seeds)
            self.evals.appendleft(piece)
            self.pools["reward"].replace_dead(task.scorer, self.log)
            return
        self.traffic.add("eval", int(measures.pop(SCORER_BYTES, [0])[0]))
        self.traffic.add_payload("eval", measures)
        w.busy_seconds += self.runtime.now() - task.started
        piece.finished(measures)
        if w.retiring:
            self.pools[task.pool].remove(w)

    def _redo(self, task: Task) -> None:
        origin = self.stages[task.stage].origin
        jobs = [Job((g,)) for g in task.job.work] if origin == "explore" else [Job(task.job.work)]
        self.queues[origin].extendleft(reversed(jobs))

    def _worker_died(self, task: Task) -> None:
        pool, w = self.pools[task.pool], task.worker
        self.log(f"{w.name} died; re-queueing its {task.stage} work")
        if task.stage == "eval":
            self.evals.appendleft(task.job.work[0])
        elif task.job.inputs:  # a later stage: its inputs are still in the object store
            self.queues[task.stage].appendleft(task.job)
        else:
            self._redo(task)
        if w.retiring:
            pool.workers.pop(w.name, None)
        else:
            pool.replace_dead(w, self.log)
