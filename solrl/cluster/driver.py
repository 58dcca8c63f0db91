"""The distributed Sol-RL engine's scheduling: what runs next, on which worker, when a result is
complete, what a death means; through a runtime (solrl.cluster.seam), Ray's or the virtual clock's.

Work is pulled: prompt groups, or slices of their seeds, go to whichever rollout worker is idle
(solrl.cluster.dispatch); a group whose candidates are all in is selected and queued for
regeneration; its samples go by reference to the learner ranks that train them; a finished step's
policy is sent to every sampler without waiting. Under rollout.max_policy_lag L, iteration j is
queued as soon as the policy is at most L versions behind the step that will train it, and a step
is completed the moment it ends, so the rollout pool never waits for the regeneration tail or the
learner. Run folder, evals and checkpoints: solrl.run; control, metrics, live view: the session.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Self

from solrl.autoscale import Autoscaler
from solrl.cluster import pool_eval
from solrl.cluster.audit_desk import STAGES as AUDIT_STAGES
from solrl.cluster.audit_desk import AuditDesk
from solrl.cluster.dispatch import Dispatcher, Done, stages
from solrl.cluster.engine_duties import EngineDuties
from solrl.cluster.eval_tasks import Finished, HeldRows
from solrl.cluster.learners import Launched
from solrl.cluster.ledger import IterationState, Ledger, Regenerated
from solrl.cluster.publish import Publisher
from solrl.cluster.runtime import RayRuntime
from solrl.cluster.seam import Runtime
from solrl.cluster.session import Session
from solrl.cluster.slices import pieces_for
from solrl.cluster.startup import start_workers
from solrl.cluster.telemetry import Telemetry
from solrl.cluster.traffic import Traffic
from solrl.config import RunConfig
from solrl.evaluation import load_run_prompts, prompt_order
from solrl.faults import FaultPlan
from solrl.run import checkpoint_due, eval_due, execute
from solrl.runs import IterationRow, make_groups
from solrl.workers.reward import candidates_from_rewards
from solrl.workers.selector import Selector
from solrl.workers.store import CandidateStore


class Driver(EngineDuties):
    """Runs one distributed Sol-RL run; `on_iteration(driver, row)` is called after each."""

    def __init__(
        self,
        config: RunConfig,
        out: pathlib.Path,
        log: Callable[[str], None] = print,
        on_iteration: Callable[[Driver, dict], None] | None = None,
        resume: str | pathlib.Path | None = None,
        runtime: Runtime | None = None,
        **session,  # metrics_port, metrics_host, metrics_token, live (solrl.cluster.session)
    ):
        if config.rollout.mode != "sol":  # the distributed run always regenerates
            raise ValueError("rollout.mode='direct' runs only with --local (the single-process engine)")
        runtime = runtime or RayRuntime()
        self.config, self.out, self.on_iteration, self.resume, self.runtime = config, pathlib.Path(out), on_iteration, resume, runtime
        self.session = Session(config, self.out, log, **session)
        self.metrics, self.control, self.log = self.session.metrics, self.session.control, self.session.log
        self.prompts = load_run_prompts(config, config.prompts)
        self.order = prompt_order(config, self.prompts)
        self.order_states: dict[int, dict] = {}  # prompt order before each iteration's groups
        self.store = CandidateStore(self.out / "candidates")
        self.ledger = Ledger(self.store, Selector(config.selection), config.rollout.max_policy_lag, runtime.now)
        self.traffic = Traffic()
        self.telemetry = Telemetry(self.traffic, runtime.now)
        self.faults = FaultPlan(config.cluster.faults, "driver-0")
        self.autoscaler = Autoscaler(config.cluster.autoscale) if config.cluster.autoscale else None
        self.start_iteration, self.pieces = 0, 0  # pieces: explore tasks a group, as last logged
        self.rows = HeldRows()  # rows waiting for their eval or explore audit
        self.audits = AuditDesk(config, self.log) if config.rollout.precision_control else None  # rollout.precision_control

    @property
    def version(self) -> int:
        return self.ledger.version

    def __enter__(self) -> Self:
        self.session.open()
        try:
            self.pools, self.learners = start_workers(self.runtime, self.config, self.log, self.session.starting_up, self.traffic)
        except BaseException:
            self.session.close()
            raise
        c = self.config.cluster
        self.publisher = Publisher(self.runtime, lambda: pool_eval.policy_holders(self.pools), self.log)
        table = stages("reward" in self.pools, c.learner_ranks, self.config.selection.k, audit=self.audits is not None)
        self.dispatcher = Dispatcher(self.runtime, self.pools, table, c.groups_per_task, self.log, self.traffic)
        if self.audits is not None:
            self.audits.attach(self.dispatcher, self.pools["rollout"])
            self.ledger.keep = self.audits.kept
        self.dispatcher.poll_s = None if self.runtime.virtual else 0.5  # a virtual run has no control requests to answer
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()
        self.store.flush()
        for pool in self.pools.values():
            pool.shutdown()
        self.learners.shutdown()

    def scale(self, pool: str, size: int) -> None:
        """Resize the 'rollout', 'regen' or 'reward' pool while the run goes on."""
        if pool not in self.pools:
            raise ValueError(f"pool {pool!r} is unknown; use one of {sorted(self.pools)}")
        self.pools[pool].resize(size)
        self.log(f"{pool} pool resized to {size}")
        self._status()

    def _status(self, every_s: float = 0.0) -> None:
        self.session.publish_status(self.telemetry, self.pools, self.dispatcher.depths(), self._restarts(), self.version, self.start_iteration, every_s)

    # -- exploring and regenerating ----------------------------------------------------------------
    def _queue_iteration(self, it: int) -> None:
        self.order_states[it] = self.order.state()
        groups = make_groups(self.config, self.prompts, self.order, it, self.version)
        self.ledger.open(it, groups)
        self.pieces = pieces_for(self.config, groups, self.pools["rollout"].size, self.pieces, self.log)
        self.dispatcher.put("explore", groups, self.pieces)

    def _deliver(self, done: Done) -> None:
        """A finished explore, regeneration or explore-audit chain, into the ledger (and the audit)."""
        origin, audits = done.origin_report, self.audits
        if done.stage in AUDIT_STAGES:
            audits.delivered(done)
        elif done.stage in ("explore", "score_explore"):  # the proxy rewards of the groups sent, in their seed order
            results = candidates_from_rewards(done.work, done.summary["rewards"], origin["version"], origin["seconds_per_group"])
            if audits is not None:
                audits.explored_at(results, origin["precision"])
            for sel in self.ledger.explored(results, origin["worker"]):
                self.dispatcher.put("regen", (sel,))
                if audits is not None:
                    audits.selected(sel, self.ledger.candidates(sel))
        else:  # regen / score_regen: the group's shards and conditioning go on to the learners by reference
            rewards = done.summary["rewards"][0] if done.stage == "regen" else done.summary["rewards"]
            self.ledger.regenerated(Regenerated.of(done.work[0], done.outputs, rewards, origin))
            if audits is not None:
                audits.regenerated(done.work[0], rewards)
        if audits is not None:  # each iteration whose groups are all regenerated or dropped, in order: its audit is decided
            while (state := self.ledger.iterations.get(self.audit_next)) is not None and state.complete:
                audits.decide(self.audit_next)
                self.audit_next += 1

    def _pump(self, until: Callable[[], bool]) -> None:
        """Hand out work and collect results until `until()` holds."""
        while not until():
            self.dispatcher.dispatch()
            for done in self.dispatcher.collect():
                self._deliver(done)
            self.publisher.poll()
            self.control.answer(self.scale)
            self._status(every_s=0.5)
            self.session.stage(self.ledger.current(), self.dispatcher.depths(), self.pools)

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
        if launched is None or launched.step is None or (self.dispatcher.watch and not self.dispatcher.woken):
            return launched is not None and launched.step is None  # no ranks' result has come in since the last look
        done, self.dispatcher.watch = self.learners.progress(launched.step)
        self.dispatcher.woken = done  # an ended step stays ended until _complete takes it
        return done

    def _publish(self, update_ref, nbytes: int, version: int) -> float:
        seconds = self.publisher.publish(update_ref, nbytes, version)
        self.ledger.version = version
        return seconds

    def _complete(self, launched: Launched) -> Iterator[IterationRow]:
        """Finish a launched step: publish its weights, yield the iteration's row."""
        it, state = launched.iteration, launched.state
        self.dispatcher.watch, self.dispatcher.woken = [], True
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
            self.log(f"autoscale: {decision.reason}")
            self.scale("rollout", decision.size)
        self.ledger.iterations.pop(it, None)
        self.store.flush()  # the log as of this iteration: a checkpoint after its row resumes from here
        audit = self.audits.closing(it) if self.audits is not None else None
        waits = eval_due(self.config, it) or bool(self.rows.held) or not (audit is None or audit.done)
        finished = Finished(row, self.version, self.store.parts, held=waits, audit=audit)
        self._start_evals(it, finished)
        if finished.held and (checkpoint_due(self.config, it) or self._wants_checkpoint()):
            finished.saved = self.learners.checkpoint_state(self.version)  # the ranks move on before its row is written
        self.rows.held.append(finished)
        yield from self._rows()

    def _rows(self) -> Iterator[IterationRow]:
        for finished in self.rows.take():
            self.faults.reached("row")
            yield finished.row

    def iterate(self, stop: Callable[[], bool]) -> Iterator[IterationRow]:
        """Iterations until train.iterations or `stop()`: each queued when the lag bound allows,
        each step completed the moment it ends, while work keeps being handed out."""
        total, lag, per_step = self.config.train.iterations, self.config.rollout.max_policy_lag, self.config.train.updates_per_iteration
        self.session.show(total, self.start_iteration)
        first, base = self.start_iteration, self.version
        self.audit_next = first  # the next iteration whose explore audit is to be decided
        queued, it, inflight, halt = first, first, None, False
        while True:
            while queued < total and not halt and self.version + lag >= base + (queued - first) * per_step:
                self._queue_iteration(queued)
                queued += 1
            state = self.ledger.iterations.get(it) if it < total and not halt else None
            if state is None and inflight is None and not self.rows.held:
                break
            # at lag 0 a step also waits for its iteration's explore audit, which then checks the policy that explored
            ready = lambda: inflight is None and state is not None and state.complete and (lag > 0 or self.audits is None or self.audits.settled(it))  # noqa: B023
            launchable = lambda: ready() and not self.dispatcher.lent_busy()  # a lent worker shares its learner's GPU
            self.dispatcher.lending = lambda: it + max(lag, 1) - 1 if inflight is None and not ready() else None  # noqa: B023 (idle learners: lag L leaves L - 1 steps of slack)
            self._pump(lambda: self._settled(inflight) or launchable() or self.rows.ready())  # noqa: B023
            yield from self._rows()
            if self._settled(inflight):
                yield from self._complete(inflight)
                inflight, halt = None, halt or stop() or self.session.stopping
            elif launchable():
                launched, it = self._launch(it, state), it + 1
                if lag > 0:
                    inflight = launched
                else:
                    yield from self._complete(launched)
                    halt = halt or stop() or self.session.stopping
        self.ledger.drop_unfinished()

    def run(self) -> dict:
        """The whole run (solrl.run.execute with this engine); returns eval.json's report."""
        subscribers = [self.metrics.observe_iteration]
        if self.session.live:
            subscribers.append(lambda row: self.session.view.iteration_done(row))
        if self.on_iteration is not None:
            subscribers.append(lambda row: self.on_iteration(self, row))
        with self:
            return execute(self, self.config, self.out, self.log, subscribers, resume=self.resume)
