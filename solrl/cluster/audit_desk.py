"""The explore audit of the distributed run, and the precision moves it causes
(rollout.precision_control; the rule is solrl.precision_control's, the single-process engine's
audit solrl.explore_audit's).

When a group is selected, `audit` of its seeds are drawn at random, as the local run draws them.
With rollout.precision_control.sentinel the audit's work waits until the whole iteration is
regenerated: the selected seeds' Spearman (solrl.audit_schedule) then decides whether it runs.
The drawn seeds the selector left are regenerated for the audit only (an `audit` task on the
regeneration pool, never trained on); the selected ones' BF16 rewards come from their training
regeneration. With rollout.precision_control.in_batch the desk decides before the selection (the
ledger asks `kept` for each whole explored group), the selection keeps the drawn seeds, and the
audit regenerates nothing of its own. The drawn seeds are also previewed at the rungs the controller probes (a `preview`
task on the rollout pool for each): the rung below while explore runs above the cheapest, the rung
above while its agreement has been poor. An iteration's row waits for
its audit (solrl.cluster.eval_tasks.HeldRows); rows are given out in order, so the controller
observes the iterations in order, as in the local run.

A move goes to every rollout worker as an actor call, which runs in order with the tasks it is
handed, so every explore task handed out after it runs at the new precision; workers spawned
later start at it. Every explore result says the precision it ran at: the row counts the images
explored at each (the modeled cost prices them so), and only groups explored at the controller's
precision count toward its figure (under max_policy_lag > 0 a move can fall between two slices of
an iteration). At lag 0 a step waits for its iteration's audit, so the audit checks the policy that
explored, as the single-process run's does; under a lag L the audit's regenerations may run on a
policy up to L versions newer than the previews they check, as the training's regenerations may,
which is what selection then lives with.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from solrl.audit_schedule import AuditSchedule, free_figure
from solrl.cluster.dispatch import Dispatcher, Done
from solrl.cluster.pools import WorkerPool
from solrl.config import RunConfig
from solrl.precision_control import PrecisionController, audit_agreement, audit_seeds, probe_figures
from solrl.stats import finite_mean
from solrl.types import Candidates, Preview, PromptGroup, Selection
from solrl.workers.store import GroupKey, group_key

STAGES = ("audit", "score_audit", "preview", "score_preview")  # the dispatcher's stages whose results come here


@dataclass
class GroupAudit:
    """One selected group's audit: its drawn seeds' previews, their BF16 rewards as they come in,
    and their previews at the other rungs the controller asked for."""

    selection: Selection
    drawn: tuple[int, ...]
    previews: tuple[float, ...]
    precision: str | None  # the precision the group was explored at (None: its slices ran at two)
    probes: tuple[str, ...] = ()  # the rungs its seeds are also previewed at (set when its audit starts)
    started: bool = False
    truth: dict[int, float] = field(default_factory=dict)
    probed: dict[str, tuple[float, ...]] = field(default_factory=dict)  # rung -> previews
    regenerated: int = 0  # seeds regenerated for the audit only

    @property
    def done(self) -> bool:
        return self.started and len(self.truth) == len(self.drawn) and len(self.probed) == len(self.probes)

    def bf16(self) -> list[float]:
        return [self.truth[s] for s in self.drawn]


@dataclass
class IterationAudit:
    """An iteration's audit, which its held row waits for; `report` (called as the row is given
    out, in order) gives the row's figures and makes the controller's move."""

    desk: AuditDesk
    iteration: int
    groups: list[GroupAudit]
    explored: dict[str, int]  # precision -> images explored
    schedule: dict[str, float | None]  # the sentinel's figure when it decided, the in-batch free figure (AuditSchedule.figures)

    @property
    def done(self) -> bool:
        return all(g.done for g in self.groups)

    def report(self) -> dict:
        return self.desk.report(self)


class AuditDesk:
    def __init__(self, config: RunConfig, log: Callable[[str], None]):
        self.config, self.log = config, log
        self.control = PrecisionController(config.rollout.precision_control, config.rollout.explore_precision)
        self.groups: dict[GroupKey, GroupAudit] = {}
        self.precisions: dict[GroupKey, set[str]] = {}  # the precisions a group's explore slices ran at
        self.explored: dict[int, Counter] = {}  # iteration -> images explored at each precision
        self.schedule = AuditSchedule(config.rollout.precision_control, config.rollout.max_policy_lag)
        self.free: dict[GroupKey, float] = {}  # each regenerated group's selected seeds' preview Spearman
        self.in_batch: dict[GroupKey, tuple[int, ...]] = {}  # in_batch: each audited group's seeds, which its selection kept
        self.decided: dict[int, tuple[bool, dict]] = {}  # iteration -> audited?, its AuditSchedule.figures

    def attach(self, dispatcher: Dispatcher, rollout: WorkerPool) -> None:
        self.dispatcher, self.rollout = dispatcher, rollout

    # -- what the driver tells it --------------------------------------------------------------------
    def explored_at(self, results: list[Candidates], precision: str) -> None:
        """Explore results (whole groups or slices) and the precision they ran at."""
        for c in results:
            self.precisions.setdefault(group_key(c), set()).add(precision)
            self.explored.setdefault(c.group.iteration, Counter())[precision] += len(c.group.seeds)

    def _draw(self, group: PromptGroup) -> tuple[int, ...]:
        return audit_seeds(group.seeds, self.control.config.audit, (self.config.seed, group.iteration, group.prompt_id))

    def _ran_at(self, key: GroupKey) -> str | None:
        ran = self.precisions.get(key, set())
        return next(iter(ran)) if len(ran) == 1 else None

    def kept(self, candidates: Candidates) -> tuple[int, ...]:
        """The seeds a whole explored group's selection must keep: with in_batch, its audit seeds
        when its iteration is audited at the rung it ran at (decided now, before the selection)."""
        group, key = candidates.group, group_key(candidates)
        config = self.control.config
        if not config.in_batch or not self.schedule.audits(group.iteration, self._ran_at(key)):
            return ()
        self.in_batch[key] = self._draw(group)
        return self.in_batch[key]

    def selected(self, sel: Selection, candidates: Candidates) -> None:
        """A group was selected: draw its audit seeds, and queue what the audit needs unless the
        sentinel is to decide first."""
        group, key = candidates.group, group_key(candidates)
        precision = self._ran_at(key)
        self.precisions.pop(key, None)
        config = self.control.config
        if not config.audits(group.iteration) or (config.in_batch and key not in self.in_batch):
            return
        drawn = self._draw(group)
        preview = dict(zip(group.seeds, candidates.proxy_rewards, strict=True))
        self.groups[key] = GroupAudit(sel, drawn, tuple(preview[s] for s in drawn), precision)
        if config.sentinel is None or config.in_batch:
            self._start(self.groups[key])

    def _start(self, audit: GroupAudit) -> None:
        sel, group = audit.selection, audit.selection.group
        preview = dict(zip(audit.drawn, audit.previews, strict=True))
        audit.probes = self.control.probes(audit.precision) if audit.precision is not None else ()
        audit.started = True
        extra = tuple(s for s in audit.drawn if s not in sel.seeds)
        if extra:
            audit.regenerated = len(extra)
            self.dispatcher.put("audit", (Selection(group, extra, tuple(preview[s] for s in extra)),))
        for rung in audit.probes:
            self.dispatcher.put("preview", (Preview(PromptGroup(group.prompt_id, group.prompt, audit.drawn, group.iteration, group.version), rung),))

    def regenerated(self, sel: Selection, rewards) -> None:
        """A training regeneration's BF16 rewards: those of the group's audited seeds, and the
        sentinel's figure of the group."""
        key = group_key(sel)
        self.free[key] = free_figure(sel.seeds, sel.proxy_rewards, list(rewards), self.in_batch.pop(key, ()))
        audit = self.groups.get(key)
        if audit is not None:
            audit.truth.update((s, r) for s, r in zip(sel.seeds, rewards, strict=True) if s in audit.drawn)

    def decide(self, iteration: int) -> None:
        """Every group of `iteration` is regenerated (called in iteration order): the sentinel's
        figure, and whether the iteration's audit runs."""
        keys = sorted(k for k in self.free if k[0] == iteration)
        self.schedule.record(iteration, finite_mean([self.free.pop(k) for k in keys]))
        mine = [g for k, g in sorted(self.groups.items()) if k[0] == iteration]
        if self.control.config.in_batch:  # decided group by group as they were selected
            audited = bool(mine)
        else:
            ran = {g.precision for g in mine}
            audited = self.schedule.audits(iteration, next(iter(ran)) if len(ran) == 1 else None)
        self.decided[iteration] = (audited, self.schedule.figures(iteration))
        for key in [k for k in self.groups if k[0] == iteration]:
            if not audited:
                del self.groups[key]
            elif not self.groups[key].started:
                self._start(self.groups[key])

    def delivered(self, done: Done) -> None:
        """An audit regeneration's or a preview's rewards."""
        (work,) = done.work
        audit = self.groups[group_key(work)]
        if done.stage in ("audit", "score_audit"):
            rewards = done.summary["rewards"][0] if done.stage == "audit" else done.summary["rewards"]
            audit.truth.update(zip(work.seeds, rewards, strict=True))
        else:
            audit.probed[work.precision] = tuple(done.summary["rewards"])

    def settled(self, iteration: int) -> bool:
        """Whether every selected group of `iteration` has its audit in."""
        return all(g.done for k, g in self.groups.items() if k[0] == iteration)

    def closing(self, iteration: int) -> IterationAudit:
        """The audit the row of `iteration` (all its groups selected by now) waits for."""
        # in prompt order, not the order explores finished, so per-group figures list as in the local run;
        # still looked up by the results to come
        groups = [g for k, g in sorted(self.groups.items()) if k[0] == iteration]
        audited, figures = self.decided.pop(iteration, (self.control.config.audits(iteration), {}))
        return IterationAudit(self, iteration, groups if audited else [], dict(self.explored.pop(iteration, {})), figures)

    # -- the row's figures and the move ----------------------------------------------------------------
    def report(self, audit: IterationAudit) -> dict:
        for key in [k for k in self.groups if k[0] == audit.iteration]:  # every result of the iteration is in
            del self.groups[key]
        current = self.control.precision
        sentinel = audit.schedule
        if not audit.groups:
            return {"precision": current, "explored": audit.explored} | sentinel
        mine = [g for g in audit.groups if g.precision == current]
        figures = sentinel | {
            "precision": current,
            "spearman": audit_agreement([g.previews for g in mine], [g.bf16() for g in mine]),
            "regenerated": sum(g.regenerated for g in audit.groups),
            "explored": audit.explored,
            "groups": len(mine),
        }
        previewed = Counter()
        for g in audit.groups:
            for rung in g.probes:
                previewed[rung] += len(g.drawn)
        if previewed:
            figures["previewed_at"] = dict(previewed)
        for rung in (r for r in (self.control.cheaper, self.control.safer) if r is not None):
            both = [g for g in mine if rung in g.probed]  # the rung's figure is over the current rung's groups only
            if both:
                probed = {rung: [g.probed[rung] for g in both]}
                figures |= probe_figures(self.control, probed, [g.previews for g in both], [g.bf16() for g in both])
        move = self.control.observe(audit.iteration, figures["spearman"], figures.get("cheaper_spearman"), figures.get("safer_gains", ()))
        if move is not None:
            self.log(f"explore precision {move.source} -> {move.target} after iteration {audit.iteration + 1}: {move.reason}")
            figures["switch"] = {"from": move.source, "to": move.target, "reason": move.reason}
            self.apply()
        return {k: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v for k, v in figures.items()}

    def apply(self) -> None:
        """Explore at the controller's precision: every rollout worker from its next task, and every
        worker spawned from now."""
        precision = self.rollout.explore_rung = self.control.precision
        for w in list(self.rollout.workers.values()):
            self.rollout.runtime.call(w.handle, "set_explore_precision", precision)

    def state(self, through: int) -> dict:
        """The controller's state and the sentinel's figures, for a checkpoint after iteration `through`."""
        return self.control.state() | {"sentinel": self.schedule.state(through)}

    def load_state(self, state: dict) -> None:
        self.control.load_state(state)
        self.schedule.load_state(state.get("sentinel", {}))
