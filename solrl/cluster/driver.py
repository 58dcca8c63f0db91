"""The distributed Sol-RL engine: the single-process loop's steps, on Ray actor pools.

Work is pulled: prompt groups wait in a queue and go to whichever rollout worker is idle; a
group whose candidates are all in is selected at once and its selection queued for the
regeneration pool (solrl.cluster.dispatch). Regenerated samples stay in the object store and go
by reference to the learner ranks that train them (solrl.cluster.learners). After each learner
step the new rollout policy is sent once to every sampler as a WeightUpdate, without waiting
(solrl.cluster.publish). Every byte that crosses between processes is counted by kind
(solrl.cluster.traffic).

A dead sampler's or reward worker's tasks are re-queued and the worker replaced; a dead learner
group is restarted and brought back to where the failed step began. With max_policy_lag > 0 the
next iteration explores while the learner trains; records older than the bound are dropped and
counted (solrl.cluster.ledger). The run folder, eval schedule, log and report are solrl.run's,
shared with the local loop.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from solrl.autoscale import Autoscaler
from solrl.cluster import pool_eval
from solrl.cluster.control import Control, serve_control
from solrl.cluster.dispatch import Dispatcher, Done, stages
from solrl.cluster.learners import LearnerStep
from solrl.cluster.ledger import IterationState, Ledger, Regenerated
from solrl.cluster.pools import WorkerPool
from solrl.cluster.publish import Publisher
from solrl.cluster.seam import Runtime
from solrl.cluster.slices import explore_pieces, seeds_of
from solrl.cluster.startup import start_workers, starting
from solrl.cluster.telemetry import Telemetry
from solrl.cluster.traffic import Traffic
from solrl.cluster.v1.control_pb2 import RunStatus
from solrl.cluster.view import LiveView
from solrl.config import RunConfig
from solrl.evaluation import load_run_prompts
from solrl.faults import FaultPlan
from solrl.metrics import MetricsServer, RunMetrics
from solrl.run import checkpoint_due, execute
from solrl.runs import make_groups, prompt_order
from solrl.workers.reward import candidates_from_rewards
from solrl.workers.selector import Selector
from solrl.workers.store import CandidateStore


@dataclass(frozen=True)
class Launched:
    """A learner step started on an iteration (the moment its last group was regenerated), from
    which policy version."""

    iteration: int
    state: IterationState
    step: LearnerStep | None  # None: every group was dropped
    start: float
    version: int


class Driver:
    """Runs one distributed Sol-RL run; `on_iteration(driver, row)` is called after each."""

    def __init__(
        self,
        config: RunConfig,
        out: pathlib.Path,
        log: Callable[[str], None] = print,
        on_iteration: Callable[[Driver, dict], None] | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        metrics_token: str | None = None,
        resume: str | pathlib.Path | None = None,
        live: bool = False,
        runtime: Runtime | None = None,
    ):
        if config.rollout.mode != "sol":
            raise ValueError("rollout.mode='direct' runs only with --local; the distributed run always regenerates")
        self.config, self.out, self.log, self.on_iteration = config, pathlib.Path(out), log, on_iteration
        if runtime is None:
            from solrl.cluster.runtime import RayRuntime

            runtime = RayRuntime()
        self.runtime = runtime
        self.prompts = load_run_prompts(config, config.prompts)
        self.order = prompt_order(config, self.prompts)
        self.store = CandidateStore(self.out / "candidates")
        self.ledger = Ledger(self.store, Selector(config.selection), config.rollout.max_policy_lag, runtime.now)
        self.traffic = Traffic()
        self.telemetry = Telemetry(self.traffic, runtime.now)
        self.metrics = RunMetrics()
        self.metrics.prime({pool: n for pool, (n, _) in config.cluster.demands().items()}, config.rollout.max_policy_lag)
        self.server = MetricsServer(self.metrics, metrics_port, metrics_host, metrics_token) if metrics_port is not None else None
        self.start_iteration = 0
        self.resume = resume
        self.order_states: dict[int, dict] = {}  # prompt order before each iteration's groups
        self.live = live
        self.view: LiveView | None = None
        self.faults = FaultPlan(config.cluster.faults, "driver-0")
        self.control, self.control_server = Control(), None
        self.pools: dict[str, WorkerPool] = {}  # rollout, regen and, when configured, reward
        self.last_checkpoint = ""  # the newest checkpoint's folder
        self.autoscaler = Autoscaler(config.cluster.autoscale) if config.cluster.autoscale else None
        self.status_at = 0.0  # time.monotonic() of the newest status
        self.pieces = 0  # explore tasks a group (solrl.cluster.slices), as last logged

    @property
    def version(self) -> int:
        return self.ledger.version

    # -- set-up ----------------------------------------------------------------------------------
    def __enter__(self) -> Driver:
        c = self.config.cluster
        if c.control_port is not None:
            self.control_server = serve_control(self.control, c)
            self.log(self.control_server.announcement)
        try:
            starting_up = {"state": "starting", "out": str(self.out), "iterations": self.config.train.iterations}
            on_waiting = lambda w: self.control.publish(RunStatus(**starting_up, waiting_for=w))  # noqa: E731
            self.pools, self.learners = start_workers(self.runtime, self.config, self.log, on_waiting, self.traffic)
        except BaseException:
            self._stop_control()
            raise
        self.publisher = Publisher(self.runtime, lambda: pool_eval.samplers(self.pools), self._log)
        self.dispatcher = Dispatcher(self.runtime, self.pools, stages("reward" in self.pools, c.learner_ranks), c.groups_per_task, self._log, self.traffic)
        self.dispatcher.poll_s = None if self.runtime.virtual else 0.5  # a virtual run has no control requests to answer
        return self

    def _stop_control(self) -> None:
        self.control.close("the run has ended")
        if self.control_server is not None:
            self.control_server.stop()

    def __exit__(self, *exc) -> None:
        self._stop_control()
        if self.view is not None:
            self.view.close()
        self.store.flush()
        for pool in self.pools.values():
            pool.shutdown()
        self.learners.shutdown()
        if self.server is not None:
            self.server.close()

    # -- checkpoints (written and resumed by solrl.run.Checkpoints) ---------------------------------
    def checkpoint_state(self, it: int) -> tuple[dict, dict]:
        self.faults.reached("checkpoint")
        tensors = self.runtime.get(self.learners.checkpoint_state(self.version))
        return tensors, {"order": self.order_states.get(it + 1, self.order.state()), "log_parts": self.store.parts}

    def restore(self, tensors: dict, state: dict) -> None:
        self.learners.restore(tensors, state["step"])
        self.ledger.version = state["step"]
        self.start_iteration = state["iteration"]
        self.order.load_state(state["order"])
        self.store.truncate(state.get("log_parts", 0))
        self._publish(*self.learners.weight_update(), self.version)

    def checkpoint_wanted(self) -> bool:
        return bool(self.control.checkpoints) or self.control.stop_requested.is_set()

    def checkpointed(self, path: pathlib.Path, iteration: int) -> None:
        self.last_checkpoint = str(path)
        self.control.checkpointed(str(path), iteration)

    def _publish_status(self, every_s: float = 0.0) -> None:
        """The control service's answer to GetStatus, as of now (unless one was made less than
        `every_s` wall-clock seconds ago: it walks every worker)."""
        if time.monotonic() - self.status_at < every_s:
            return
        self.status_at = time.monotonic()
        done = self.telemetry.last.get("iteration", self.start_iteration - 1) + 1
        fields = {"state": "stopping" if self.control.stop_requested.is_set() else "running", "iteration": done, "version": self.version}
        waiting = starting(self.pools)
        for pool, lines in waiting.items():
            self.metrics.starting.labels(pool).set(len(lines))
        fields |= {"iterations": self.config.train.iterations, "out": str(self.out), "last_checkpoint": self.last_checkpoint}
        fields["waiting_for"] = [line for lines in waiting.values() for line in lines]
        self.control.publish(self.telemetry.status(self.pools, self.dispatcher.depths(), self._restarts(), **fields))

    def _log(self, message: str) -> None:
        (self.view.write if self.view is not None else self.log)(message)

    # -- scaling -----------------------------------------------------------------------------------
    def scale(self, pool: str, size: int) -> None:
        """Resize the 'rollout', 'regen' or 'reward' pool while the run goes on."""
        pools = self.pools
        if pool not in pools:
            raise ValueError(f"pool {pool!r} is unknown; use one of {sorted(pools)}")
        pools[pool].resize(size)
        self._log(f"{pool} pool resized to {size}")
        self._publish_status()

    # -- exploring and regenerating ----------------------------------------------------------------
    def _queue_iteration(self, it: int) -> None:
        self.order_states[it] = self.order.state()
        groups = make_groups(self.config, self.prompts, self.order, it, self.version)
        self.ledger.open(it, groups)
        seeds, workers = seeds_of(groups), self.pools["rollout"].size
        pieces = explore_pieces(self.config.cluster.explore_split, len(groups), seeds, workers)
        if pieces != self.pieces:
            self._log(f"explore: each group's {seeds} seeds in {pieces} task{'s' if pieces > 1 else ''} for {workers} rollout workers")
            self.pieces = pieces
        self.dispatcher.put("explore", groups, pieces)

    def _deliver(self, done: Done) -> None:
        """A finished explore or regeneration chain, into the ledger."""
        origin = done.origin_report
        if done.stage in ("explore", "score_explore"):  # the proxy rewards of the groups sent, in their seed order
            results = candidates_from_rewards(done.work, done.summary["rewards"], origin["version"], origin["seconds_per_group"])
            selections = self.ledger.explored(results, origin["worker"])
        else:  # regen / score_regen: the group's shards and conditioning go on to the learners by reference
            rewards = done.summary["rewards"][0] if done.stage == "regen" else done.summary["rewards"]
            self.ledger.regenerated(Regenerated.of(done.work[0], done.outputs, rewards, origin))
            return
        for sel in selections:
            self.dispatcher.put("regen", (sel,))

    def _pump(self, until: Callable[[], bool]) -> None:
        """Hand out work and collect results until `until()` holds."""
        while not until():
            self.dispatcher.dispatch()
            for done in self.dispatcher.collect():
                self._deliver(done)
            self.publisher.poll()
            self.control.answer(self.scale)
            self._publish_status(every_s=0.5)
            state = self.ledger.current()
            if self.view is not None and state is not None:
                workers = {name: pool.size for name, pool in self.pools.items()}
                self.view.stage(len(state.candidates), len(state.regenerated) + state.dropped, len(state.groups), self.dispatcher.depths(), workers)

    # -- learning and weight sync ------------------------------------------------------------------
    def _launch(self, it: int, state: IterationState) -> Launched:
        """Start the learner step on an iteration's groups, in the order they were drawn."""
        now = self.runtime.now()
        self.ledger.drop_stale_batches(state)
        groups = state.ordered()
        return Launched(it, state, self.learners.step(groups) if groups else None, now, self.version)

    def _settled(self, launched: Launched | None) -> bool:
        """Whether a launched step has ended (or failed, which finish() recovers); the refs
        still running are what the pump also waits on."""
        if launched is None:
            return False
        if launched.step is None:
            return True
        done, self.dispatcher.watch = self.learners.progress(launched.step)
        return done

    def _publish(self, update_ref, nbytes: int, version: int) -> float:
        seconds = self.publisher.publish(update_ref, nbytes, version)
        self.ledger.version = version
        return seconds

    def _complete(self, launched: Launched) -> Iterator[dict]:
        """Finish a launched step: publish its weights, yield the iteration's row, checkpoint."""
        it, state = launched.iteration, launched.state
        self.dispatcher.watch = []
        stats, timing = None, {"regen_done": launched.start, "learn": 0.0, "sync": 0.0}
        if launched.step is not None:
            stats, update_ref = self.learners.finish(launched.step, self.version, checkpoint_due(self.config, it))
            timing["learn"] = self.runtime.now() - launched.start
            self.ledger.trained(state)
            timing["sync"] = self._publish(update_ref, int(stats["update_bytes"]), int(stats["version"]))
        pools, queues = self.pools, self.dispatcher.depths()
        row = self.telemetry.row(it, self.version, state, pools, queues, timing, stats, launched.version, self.ledger.dropped, self._restarts())
        decision = self.autoscaler.observe(row["busy"], pools["rollout"].size) if self.autoscaler else None
        if decision is not None:
            row["autoscale"] = {"rollout": decision.size - pools["rollout"].size}
            self._log(f"autoscale: {decision.reason}")
            self.scale("rollout", decision.size)
        self.faults.reached("row")
        self.store.flush()  # before the row: a checkpoint written after it holds this iteration's log
        yield row
        self.ledger.iterations.pop(it, None)

    def iterate(self, stop: Callable[[], bool]) -> Iterator[dict]:
        """Iterations until train.iterations or `stop()`. Iteration j is queued for exploring as
        soon as the lag bound allows (the policy is at most max_policy_lag versions behind the
        step that will train it), so the rollout pool works through the regeneration tail and the
        learner step; a step is completed the moment it ends, while work keeps being handed out."""
        total, lag, per_step = self.config.train.iterations, self.config.rollout.max_policy_lag, self.config.train.updates_per_iteration
        if self.live:
            self.view = LiveView(total, self.start_iteration)
        first, base = self.start_iteration, self.version
        queued, it, inflight, halt = first, first, None, False
        while True:
            while queued < total and not halt and self.version + lag >= base + (queued - first) * per_step:
                self._queue_iteration(queued)
                queued += 1
            state = self.ledger.iterations.get(it) if it < total and not halt else None
            if state is None and inflight is None:
                break
            self._pump(lambda: self._settled(inflight) or (inflight is None and state is not None and state.complete))  # noqa: B023
            if self._settled(inflight):
                yield from self._complete(inflight)
                inflight, halt = None, halt or stop() or self.control.stop_requested.is_set()
                continue
            launched, it = self._launch(it, state), it + 1
            if lag > 0:
                inflight = launched
            else:
                yield from self._complete(launched)
                halt = halt or stop() or self.control.stop_requested.is_set()
        self.ledger.drop_unfinished()

    # -- evaluation, checkpoints, the run ----------------------------------------------------------
    def adapter_states(self) -> dict:
        """The policy, old and EMA adapter states, fetched to write the run's lora/."""
        refs, nbytes = self.learners.adapters(self.version)
        self.traffic.add("checkpoint", nbytes, receivers=len(refs))
        return dict(zip(refs, self.runtime.get(list(refs.values()))))

    def evaluate(self, adapter: str | None) -> dict:
        return pool_eval.evaluate(self.config, self.pools, *self._adapter(adapter), self._log, self.traffic)

    def grid(self, adapter: str | None):
        return pool_eval.grid(self.config, self.pools, *self._adapter(adapter), self._log, self.traffic)

    def _adapter(self, adapter: str | None) -> tuple[object, int]:
        """(a ref to the adapter, its bytes), or (None, 0) for the base model."""
        if adapter is None:
            return None, 0
        refs, nbytes = self.learners.adapters(self.version)
        return refs[adapter], nbytes

    def _restarts(self) -> dict[str, int]:
        return {name: pool.restarts for name, pool in self.pools.items()} | {"learner": self.learners.generation}

    def totals(self) -> dict:
        return {"restarts": self._restarts(), "dropped": dict(self.ledger.dropped), "duplicates": self.store.duplicates, "bytes_moved": dict(self.traffic.total)}

    def run(self) -> dict:
        """The whole run (solrl.run.execute with this engine); returns eval.json's report."""
        subscribers = [self.metrics.observe_iteration]
        if self.live:
            subscribers.append(lambda row: self.view.iteration_done(row))
        if self.on_iteration is not None:
            subscribers.append(lambda row: self.on_iteration(self, row))
        if self.server is not None:
            host = self.server.server.server_address[0]
            self._log(f"Prometheus metrics at http://{f'[{host}]' if ':' in host else host}:{self.server.port}/metrics")
        with self:
            return execute(self, self.config, self.out, self._log, subscribers, resume=self.resume)
