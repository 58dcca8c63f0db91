"""The distributed Sol-RL driver: the single-process loop's steps, on Ray actor pools.

Work is pulled: prompt groups wait in a queue and go to whichever rollout worker is idle; a
group whose candidates are all in is selected at once and its selection queued for the
regeneration pool. Regenerated TrainBatches stay in the object store and go to the learner ranks
by reference. After each learner step the new rollout policy is published once as a
WeightUpdate and every sampler verifies, merges and reports the version it serves.

With cluster.reward_workers > 0 samplers hold no reward: their images stay in the object store
and a RewardWorker pool scores them (the labelled batch goes on to the learners by reference).

A dead sampler's or reward worker's tasks are re-queued and the worker replaced; a dead learner
group is restarted from the state it had before the failed step (kept in the object store every
iteration) and the step is redone. With max_policy_lag > 0 the next iteration explores while the learner trains;
records older than the bound are dropped and counted.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import ray
from ray.exceptions import ObjectLostError, RayActorError

from solrl.actors.reward import candidates_from_rewards
from solrl.actors.selector import Selector
from solrl.actors.store import CandidateStore, group_key
from solrl.cluster.pools import LearnerGroup, Worker, WorkerPool
from solrl.cluster.view import LiveView
from solrl.config import RunConfig, dump_config
from solrl.evaluation import describe, eval_plan, load_run_prompts, merge_measures, run_report, summarize_run, write_grid
from solrl.learner.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from solrl.learner.weight_sync import WeightSyncError
from solrl.metrics import MetricsServer, RunMetrics
from solrl.runs import iteration_row, make_groups, prompt_order, save_lora
from solrl.types import Candidates, PromptGroup, Selection


@dataclass
class Task:
    """One call in flight on a pool worker. `work` is what to redo if the task is lost: the
    prompt groups of an explore, the Selection of a regeneration. A score task carries the
    sampler's refs (images, unscored batch) and report."""

    kind: str  # explore | regen | score_explore | score_regen
    pool: WorkerPool
    worker: Worker
    work: object
    refs: tuple = ()
    report: dict | None = None


@dataclass
class IterationState:
    """What the driver tracks for one iteration while its groups are in flight."""

    groups: list[PromptGroup]
    started: float
    candidates: dict = field(default_factory=dict)  # group key -> Candidates
    selections: dict = field(default_factory=dict)  # group key -> Selection
    regenerated: dict = field(default_factory=dict)  # group key -> (batch ref, summary)
    explore_done: float | None = None
    dropped: int = 0

    @property
    def complete(self) -> bool:
        return len(self.regenerated) + self.dropped == len(self.groups)


class Driver:
    """Runs one distributed Sol-RL run; `on_iteration(driver, row)` is called after each."""

    def __init__(
        self,
        config: RunConfig,
        out: pathlib.Path,
        log: Callable[[str], None] = print,
        on_iteration: Callable[[Driver, dict], None] | None = None,
        metrics_port: int | None = None,
        resume: str | pathlib.Path | None = None,
        live: bool = False,
    ):
        if config.rollout.mode != "sol":
            raise ValueError("rollout.mode='direct' runs only with --local; the distributed run always regenerates")
        self.config, self.out, self.log, self.on_iteration = config, pathlib.Path(out), log, on_iteration
        self.prompts = load_run_prompts(config, config.prompts)
        self.order = prompt_order(config, self.prompts)
        self.selector = Selector(config.selection)
        self.store = CandidateStore(self.out / "candidates")
        self.metrics = RunMetrics()
        self.server = MetricsServer(self.metrics, metrics_port) if metrics_port is not None else None
        self.version = 0
        self.start_iteration = 0
        self.resume = resume
        self.explore_q: deque[PromptGroup] = deque()
        self.regen_q: deque[Selection] = deque()
        self.score_q: deque[Task] = deque()  # sampler results waiting for the reward pool
        self.pending: dict = {}  # result ref -> Task
        self.iterations: dict[int, IterationState] = {}
        self.order_states: dict[int, dict] = {}  # prompt order before each iteration's groups
        self.dropped: dict[str, int] = {}
        self.learner_restarts = 0
        self.live = live
        self.view: LiveView | None = None

    # -- set-up ----------------------------------------------------------------------------------
    def _start_pools(self) -> None:
        c = self.config.cluster
        self.rollout = WorkerPool(self.config, "explore", "rollout")
        self.regen = WorkerPool(self.config, "regenerate", "regen")
        self.rollout.resize(c.rollout_workers)
        self.regen.resize(c.regen_workers)
        self.rewards: WorkerPool | None = None
        if c.reward_workers:
            self.rewards = WorkerPool(self.config, "reward", "reward")
            self.rewards.resize(c.reward_workers)
        self.learners = LearnerGroup(self.config)
        self.learner_state = None  # ref to rank 0's full state after the last completed step

    def _restore(self) -> None:
        tensors, state = load_checkpoint(self.resume)
        self.log(f"resuming from step {state['step']} (iteration {state['iteration']})")
        ray.get(self.learners.call("load_state", tensors, state["step"]))
        self.version = state["step"]
        self.start_iteration = state["iteration"]
        self.order.load_state(state["order"])
        self.store.parts = state.get("log_parts", 0)
        set_rng_state(state["rng"])
        self.learner_state = ray.put(tensors)
        self._publish(self.learners.call("weight_update")[0], self.version)

    # -- scaling -----------------------------------------------------------------------------------
    @property
    def pools(self) -> dict[str, WorkerPool]:
        """The worker pools by name: rollout, regen and, when configured, reward."""
        return {"rollout": self.rollout, "regen": self.regen} | ({"reward": self.rewards} if self.rewards else {})

    def scale(self, pool: str, size: int) -> None:
        """Resize the 'rollout', 'regen' or 'reward' pool while the run goes on."""
        pools = self.pools
        if pool not in pools:
            raise ValueError(f"pool {pool!r} is unknown; use one of {sorted(pools)}")
        pools[pool].resize(size)
        self.log(f"{pool} pool resized to {size}")

    # -- the event loop ----------------------------------------------------------------------------
    def _queue_iteration(self, it: int) -> None:
        self.order_states[it] = self.order.state()
        groups = make_groups(self.config, self.prompts, self.order, it, self.version)
        self.iterations[it] = IterationState(groups, time.perf_counter())
        self.explore_q.extend(groups)

    def _dispatch(self) -> None:
        per_task = self.config.cluster.groups_per_task
        pooled = self.rewards is not None
        for w in self.rollout.idle():
            if not self.explore_q:
                break
            groups = [self.explore_q.popleft() for _ in range(min(per_task, len(self.explore_q)))]
            if pooled:
                images, report = w.handle.explore_images.options(num_returns=2).remote(groups)
                self._submit(report, Task("explore", self.rollout, w, groups, (images,)))
            else:
                self._submit(w.handle.explore.remote(groups), Task("explore", self.rollout, w, groups))
        for w in self.regen.idle():
            if not self.regen_q:
                break
            sel = self.regen_q.popleft()
            if pooled:
                batch, images, report = w.handle.regenerate_images.options(num_returns=3).remote([sel])
                self._submit(report, Task("regen", self.regen, w, sel, (batch, images)))
            else:
                batch, summary = w.handle.regenerate.options(num_returns=2).remote([sel])
                self._submit(summary, Task("regen", self.regen, w, sel, (batch,)))
        for w in self.rewards.idle() if pooled else ():
            if not self.score_q:
                break
            job = self.score_q.popleft()
            if job.kind == "explore":
                prompts = [g.prompt for g in job.work for _ in g.seeds]
                self._submit(
                    w.handle.score.remote(job.refs[0], prompts), Task("score_explore", self.rewards, w, job.work, job.refs, job.report)
                )
            else:
                batch, summary = w.handle.label.options(num_returns=2).remote(job.refs[0], job.refs[1], [job.work])
                self._submit(summary, Task("score_regen", self.rewards, w, job.work, (batch,), job.report))

    def _submit(self, ref, task: Task) -> None:
        task.worker.task = ref
        self.pending[ref] = task

    def _requeue(self, task: Task) -> None:
        """Put a lost task's work back at the front of its queue."""
        if task.kind in ("explore", "score_explore"):
            self.explore_q.extendleft(reversed(task.work))
        else:
            self.regen_q.appendleft(task.work)

    def _worker_died(self, task: Task) -> None:
        pool, w = task.pool, task.worker
        if pool.restarts >= self.config.cluster.max_restarts:
            raise RuntimeError(f"{pool.prefix} workers died {pool.restarts} times (cluster.max_restarts); giving up")
        self.log(f"{w.name} died; re-queueing its {task.kind} work and starting a replacement")
        if task.kind.startswith("score_"):  # the sampler's images are still in the object store
            self.score_q.appendleft(Task(task.kind.removeprefix("score_"), pool, w, task.work, task.refs, task.report))
        else:
            self._requeue(task)
        if not w.retiring:
            pool.replace(w)
        else:
            pool.workers.pop(w.name, None)

    def _on_result(self, task: Task, result) -> None:
        w, pooled = task.worker, self.rewards is not None
        if task.kind == "explore" and not pooled:
            results, seconds = result
            w.busy_seconds += seconds
            self._on_explore(results, w.name)
        elif task.kind == "regen" and not pooled:
            w.busy_seconds += result["seconds"]
            self._on_regen(task.work, task.refs[0], result)
        elif task.kind in ("explore", "regen"):  # rendered; now to the reward pool
            w.busy_seconds += result["seconds"]
            self.score_q.append(Task(task.kind, task.pool, w, task.work, task.refs, result))
        elif task.kind == "score_explore":
            rewards, seconds = result
            w.busy_seconds += seconds
            r = task.report
            self._on_explore(candidates_from_rewards(task.work, rewards, r["version"], r["seconds_per_group"]), r["worker"])
        else:  # score_regen: the labelled batch goes on to the learners
            w.busy_seconds += result["seconds"]
            self._on_regen(task.work, task.refs[0], task.report | {"rewards": result["rewards"]})

    def _on_explore(self, results: list[Candidates], worker: str) -> None:
        for c in results:
            state = self.iterations.get(c.group.iteration)
            if state is None or not self.store.add(c, worker):
                continue
            key = group_key(c)
            state.candidates[key] = c
            if self._too_stale(c.version):
                self._drop(state, key, "stale")
                continue
            sel = self.selector.choose(c)
            state.selections[key] = sel
            self.regen_q.append(sel)
        for state in self.iterations.values():
            if state.explore_done is None and len(state.candidates) == len(state.groups):
                state.explore_done = time.perf_counter()

    def _on_regen(self, sel: Selection, batch_ref, summary: dict) -> None:
        state = self.iterations[sel.group.iteration]
        key = group_key(sel)
        self.store.record_regenerated(sel, summary["rewards"][0], summary["worker"])
        if self._too_stale(summary["version"]):
            self._drop(state, key, "stale")
            return
        state.regenerated[key] = (batch_ref, summary)

    def _too_stale(self, version: int) -> bool:
        return self.version - version > self.config.cluster.max_policy_lag

    def _drop(self, state: IterationState, key, reason: str) -> None:
        state.dropped += 1
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.store.close(key, "dropped")

    def _pump(self, until: Callable[[], bool]) -> None:
        """Hand out work and collect results until `until()` holds."""
        while not until():
            self._dispatch()
            if not self.pending:
                raise RuntimeError("no work in flight and the iteration is incomplete; every pool is empty or retiring")
            ready, _ = ray.wait(list(self.pending), num_returns=1)
            for ref in ready:
                task = self.pending.pop(ref)
                w = task.worker
                w.task = None
                try:
                    result = ray.get(ref)
                except RayActorError:
                    self._worker_died(task)
                    continue
                except ObjectLostError:  # a sampler's images vanished (their node died): redo the work
                    self.log(f"{task.kind} input of {w.name} was lost; re-queueing its work")
                    self._requeue(task)
                    result = None
                if result is not None:
                    self._on_result(task, result)
                if w.retiring:
                    task.pool.remove(w)
            if self.view is not None and self.iterations:
                state = self.iterations[min(self.iterations)]
                self.view.stage(
                    len(state.candidates),
                    len(state.regenerated) + state.dropped,
                    len(state.groups),
                    self._queues(),
                    {name: pool.size for name, pool in self.pools.items()},
                )

    # -- learning and weight sync ------------------------------------------------------------------
    def _launch(self, it: int, state: IterationState) -> dict:
        """Start the learner step on an iteration's batches, in the order its groups were drawn.
        Batches that fell more than max_policy_lag versions behind while they waited are dropped."""
        for key in [k for k, (_, summary) in state.regenerated.items() if self._too_stale(summary["version"])]:
            del state.regenerated[key]
            self._drop(state, key, "stale")
        order = {(g.iteration, g.prompt_id): i for i, g in enumerate(state.groups)}
        refs = [state.regenerated[k][0] for k in sorted(state.regenerated, key=order.__getitem__)]
        calls = [r.step.options(num_returns=2).remote(*refs) for r in self.learners.ranks] if refs else []
        return {"it": it, "state": state, "refs": refs, "calls": calls, "start": time.perf_counter(), "version": self.version}

    def _finish(self, launched: dict) -> tuple[dict, object]:
        """Wait for a launched step; if a rank died, restart the group from the state before the
        step and redo it. Returns (stats, rank 0's WeightUpdate ref)."""
        for _ in range(self.config.cluster.max_restarts + 1):
            try:
                stats = self._gather([c[0] for c in launched["calls"]])[0]
                break
            except RayActorError:
                self.learner_restarts += 1
                self.log(f"a learner rank died; restarting the group at version {self.version} and redoing the step")
                self.learners.restart()
                if self.learner_state is not None:
                    ray.get(self.learners.call("load_state", self.learner_state, self.version))
                launched["calls"] = [r.step.options(num_returns=2).remote(*launched["refs"]) for r in self.learners.ranks]
        else:
            raise RuntimeError(f"the learner group died {self.learner_restarts} times (cluster.max_restarts); giving up")
        self.learner_state = self.learners.call("state")[0]
        return stats, launched["calls"][0][1]

    @staticmethod
    def _gather(refs: list) -> list:
        """ray.get that fails as soon as any rank fails: the survivors would wait in a collective
        for the dead rank until the process group's timeout."""
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            ray.get(ready)  # raises RayActorError for a dead rank
        return ray.get(refs)

    def _publish(self, update_ref, version: int) -> float:
        """Make `update_ref` the weights every sampler serves and check they do; seconds taken."""
        start = time.perf_counter()
        for pool in (self.rollout, self.regen):
            pool.update = update_ref  # workers spawned from now on apply it first
        calls = [
            (pool, w, w.handle.apply_update.remote(update_ref)) for pool in (self.rollout, self.regen) for w in list(pool.workers.values())
        ]
        for pool, w, ref in calls:
            try:
                served = ray.get(ref)
            except RayActorError:
                if w.name in pool.workers and not w.retiring:
                    pool.replace(w)
                continue
            if served != version:
                raise WeightSyncError(f"sampler {w.name} serves policy version {served}, expected {version}")
        self.version = version
        return time.perf_counter() - start

    # -- the run -----------------------------------------------------------------------------------
    def _evaluate(self, adapter_state) -> dict:
        """The run's eval of base + `adapter_state` (None: the base, with its best-of figure),
        its images shared out over every sampler, which are otherwise idle while it runs."""
        base = adapter_state is None
        pairs = eval_plan(self.config, base)
        workers = [w for pool in (self.rollout, self.regen) for w in pool.workers.values()]
        scorer = next(iter(self.rewards.workers.values())).handle if self.rewards is not None else None
        bounds = [len(pairs) * i // len(workers) for i in range(len(workers) + 1)]
        parts = [w.handle.measure.remote(adapter_state, pairs[a:b], scorer) for w, a, b in zip(workers, bounds, bounds[1:]) if b > a]
        return summarize_run(self.config, pairs, merge_measures(ray.get(parts)), base)

    def _grid(self, adapter_state):
        """The run's sample grid of base + `adapter_state`, or None when eval.grid_rows is 0."""
        if not self.config.eval.grid_rows:
            return None
        return ray.get(next(iter(self.regen.workers.values())).handle.grid.remote(adapter_state))

    def _checkpoint(self, it: int) -> None:
        tensors = ray.get(self.learner_state)
        state = {
            "iteration": it + 1,
            "order": self.order_states.get(it + 1, self.order.state()),
            "rng": rng_state(),
            "log_parts": self.store.parts,
            "config": json.loads(json.dumps(self.config.model_dump(mode="json"))),
        }
        save_checkpoint(self.out, self.version, tensors, state)

    def run(self) -> dict:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(dump_config(cfg))
        metrics_path = self.out / "metrics.jsonl"
        if not self.resume:
            metrics_path.write_text("")
        run_start = self.run_start = time.perf_counter()
        self._start_pools()
        try:
            if self.resume:
                self._restore()
            base = self._evaluate(None)
            self.log(f"base model: eval {describe(base)}")
            before = self._grid(None)
            train_start = time.perf_counter()
            if self.live:
                self.view = LiveView(cfg.train.iterations, self.start_iteration)
                self.log = self.view.write
            last = self._train(metrics_path, train_start)
            states = ray.get(self.learners.call("adapter_states")[0])
            save_lora(self.out / "lora", states, cfg.model, self.version)
            final = {name: self._evaluate(states[name]) for name in ("ema", "policy")}
            if before is not None:
                write_grid(self.out / "grid.png", before, self._grid(states["ema"]))
        finally:
            if self.view is not None:
                self.view.close()
            self.store.flush()
            self._shutdown()
        report = run_report(
            base,
            final["ema"],
            final["policy"],
            iterations=last,
            train_seconds=round(time.perf_counter() - train_start, 1),
            seconds=round(time.perf_counter() - run_start, 1),
            restarts={name: pool.restarts for name, pool in self.pools.items()} | {"learner": self.learner_restarts},
            dropped=dict(self.dropped),
            duplicates=self.store.duplicates,
        )
        (self.out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
        self.log(f"done in {report['seconds']:.0f}s: eval {describe(base)} -> {describe(final['ema'])} (EMA)")
        return report

    def _train(self, metrics_path: pathlib.Path, train_start: float) -> int:
        """Iterations until train.iterations or train.max_seconds; returns how many ran."""
        total, lag = self.config.train.iterations, self.config.cluster.max_policy_lag
        it, inflight, stop = self.start_iteration, None, False
        if it < total:
            self._queue_iteration(it)
        while it < total and not stop:
            state = self.iterations[it]
            self._pump(lambda: state.complete)
            regen_done = time.perf_counter()
            if inflight is not None:  # the previous step trained while this iteration explored
                stop = self._complete(inflight, metrics_path, train_start)
            launched = self._launch(it, state)
            launched["regen_done"] = regen_done
            it += 1
            if lag > 0 and it < total and not stop:
                inflight = launched
                self._queue_iteration(it)  # explored at the current version while the learner runs
            else:
                inflight = None
                stop = self._complete(launched, metrics_path, train_start) or stop
                if it < total and not stop:
                    self._queue_iteration(it)
        if inflight is not None:
            self._complete(inflight, metrics_path, train_start)
        # groups queued for an iteration that will not run are logged as dropped, never lost
        for state in self.iterations.values():
            for g in state.groups:
                key = (g.iteration, g.prompt_id)
                if key in self.store.open:
                    self._drop(state, key, "run_ended")
        return it

    def _complete(self, launched: dict, metrics_path: pathlib.Path, train_start: float) -> bool:
        """Finish a launched step: publish its weights, log the row, checkpoint. True when
        train.max_seconds has passed."""
        it, state = launched["it"], launched["state"]
        stats, sync_s = None, 0.0
        if launched["calls"]:
            stats, update_ref = self._finish(launched)
            learn_s = time.perf_counter() - launched["start"]
            for key in state.regenerated:
                self.store.close(key, "trained")
            sync_s = self._publish(update_ref, int(stats["version"]))
        else:
            learn_s = 0.0
        row = self._row(it, state, launched["regen_done"], learn_s, sync_s, stats, launched["version"])
        with metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.metrics.observe_iteration(row)
        self.store.flush()
        every = self.config.cluster.checkpoint_every
        if self.learner_state is not None and every and (it + 1) % every == 0:
            self._checkpoint(it)
        self.log(
            f"iter {it + 1}/{self.config.train.iterations}: bf16 reward {row['bf16_reward_mean']:.3f} "
            f"proxy {row['proxy_reward_mean']:.3f} rho {row['spearman']:.2f} loss {row['loss']:.4f} "
            f"({row['iteration_seconds']:.1f}s, lag {row['policy_lag']})"
        )
        self.iterations.pop(it, None)
        if self.view is not None:
            self.view.iteration_done(row)
        if self.on_iteration:
            self.on_iteration(self, row)
        max_s = self.config.train.max_seconds
        return bool(max_s and time.perf_counter() - train_start >= max_s)

    def _row(self, it, state: IterationState, regen_done, learn_s, sync_s, stats, trained_at: int) -> dict:
        keys = [k for k in state.regenerated]
        selections = [state.selections[k] for k in keys]
        bf16 = [state.regenerated[k][1]["rewards"][0] for k in keys]
        versions = [state.regenerated[k][1]["version"] for k in keys]
        explore_end = state.explore_done or regen_done
        seconds = {
            "explore": explore_end - state.started,
            "regenerate": max(0.0, regen_done - explore_end),
            "learn": learn_s,
            "sync": sync_s,
        }
        now = time.perf_counter()
        wall = now - state.started
        # Busy seconds accumulate between rows; with overlapping iterations that interval is
        # shorter than the iteration's own span, so utilization is measured over it.
        interval = now - max(state.started, getattr(self, "_last_row_at", state.started))
        self._last_row_at = now
        stats = stats or {k: float("nan") for k in ("loss", "policy_loss", "kl", "grad_norm", "old_decay")}
        row = iteration_row(it, self.version, list(state.candidates.values()), selections, bf16, seconds, stats)
        busy = {}
        for pool in self.pools.values():
            for w in pool.workers.values():
                busy[w.name] = round(min(1.0, w.busy_seconds / interval), 3) if interval > 0 else 0.0
                w.busy_seconds = 0.0
        row.update(
            iteration_seconds=round(wall, 3),
            elapsed=round(now - self.run_start, 1),
            busy=busy,
            queues=self._queues(),
            policy_lag=max((trained_at - v for v in versions), default=0),
            sync_bytes=int(stats.get("update_bytes", 0)) if stats else 0,
            dropped=self._delta("dropped", dict(self.dropped)),
            restarts=self._delta(
                "restarts", {name: pool.restarts for name, pool in self.pools.items()} | {"learner": self.learner_restarts}
            ),
            workers={name: pool.size for name, pool in self.pools.items()},
        )
        return row

    def _queues(self) -> dict[str, int]:
        queues = {"explore": len(self.explore_q), "regenerate": len(self.regen_q)}
        return queues | ({"score": len(self.score_q)} if self.rewards is not None else {})

    def _delta(self, name: str, totals: dict[str, int]) -> dict[str, int]:
        """Counts since the last row (rows carry per-iteration increments)."""
        seen = self.__dict__.setdefault(f"_seen_{name}", {})
        out = {k: v - seen.get(k, 0) for k, v in totals.items() if v - seen.get(k, 0)}
        seen.update(totals)
        return out

    def _shutdown(self) -> None:
        for name in ("rollout", "regen", "rewards"):
            pool = getattr(self, name, None)
            if pool is not None:
                pool.shutdown()
        if getattr(self, "learners", None) is not None:
            self.learners.shutdown()
        if self.server is not None:
            self.server.close()
