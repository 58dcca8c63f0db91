"""The driver's per-iteration ledger: which prompt groups each iteration holds, what has been
explored, selected and regenerated for them, and what was dropped and why.

Every group ends in the candidate log exactly once, as trained or dropped: a group whose
records fell more than max_policy_lag versions behind the learner is dropped as stale, and
groups queued for an iteration that never ran are dropped as run_ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from solrl.cluster.slices import Partial
from solrl.learner.plan import GroupLabels
from solrl.types import Candidates, PromptGroup, Selection
from solrl.workers.selector import Selector
from solrl.workers.store import CandidateStore, GroupKey, group_key


@dataclass(frozen=True)
class Regenerated:
    """A regenerated group as the driver tracks it: its outputs in the object store (one x0 shard
    per learner rank and its conditioning, solrl.learner.plan) with their bytes, its BF16 rewards,
    and which worker made it at which policy version."""

    selection: Selection
    shards: tuple  # ObjectRefs
    cond: object  # ObjectRef
    shard_bytes: tuple[int, ...]
    cond_bytes: int
    rewards: tuple[float, ...]
    version: int
    worker: str

    @classmethod
    def of(cls, selection: Selection, outputs: tuple, rewards, report: dict) -> Regenerated:
        """From a regeneration's stored outputs (shards, then conditioning), its BF16 rewards and
        its sampler's report."""
        kept = report["kept_bytes"]
        return cls(selection, outputs[:-1], outputs[-1], tuple(kept["samples"]), kept["conditioning"], tuple(rewards), report["version"], report["worker"])

    def labels(self) -> GroupLabels:
        return GroupLabels(self.selection.group.prompt_id, self.selection.seeds, self.rewards)


@dataclass
class IterationState:
    """What the driver tracks for one iteration while its groups are in flight."""

    groups: list[PromptGroup]
    started: float
    partial: dict = field(default_factory=dict)  # group key -> Partial, while its slices come in
    candidates: dict = field(default_factory=dict)  # group key -> Candidates
    selections: dict = field(default_factory=dict)  # group key -> Selection
    regenerated: dict = field(default_factory=dict)  # group key -> Regenerated
    explore_done: float | None = None
    dropped: int = 0

    def __post_init__(self) -> None:
        self.by_key = {(g.iteration, g.prompt_id): g for g in self.groups}  # group key -> the whole group

    @property
    def complete(self) -> bool:
        return len(self.regenerated) + self.dropped == len(self.groups)

    def ordered(self) -> list[Regenerated]:
        """The regenerated groups in the order they were drawn."""
        order = {(g.iteration, g.prompt_id): i for i, g in enumerate(self.groups)}
        return [self.regenerated[k] for k in sorted(self.regenerated, key=order.__getitem__)]


class Ledger:
    def __init__(self, store: CandidateStore, selector: Selector, max_policy_lag: int, clock: Callable[[], float]):
        self.store, self.selector, self.max_lag, self.clock = store, selector, max_policy_lag, clock
        self.keep: Callable[[Candidates], tuple[int, ...]] = lambda c: ()  # seeds a group's selection keeps (an in-batch explore audit's)
        self.iterations: dict[int, IterationState] = {}
        self.dropped: dict[str, int] = {}
        self.version = 0  # the learner's policy version, set by the driver as weights are published

    def open(self, iteration: int, groups: list[PromptGroup]) -> None:
        self.iterations[iteration] = IterationState(groups, self.clock())

    def current(self) -> IterationState | None:
        """The oldest iteration still in flight."""
        return self.iterations[min(self.iterations)] if self.iterations else None

    def too_stale(self, version: int) -> bool:
        return self.version - version > self.max_lag

    def explored(self, results: list[Candidates], worker: str) -> list[Selection]:
        """Record explore results (whole groups, or slices of one: solrl.cluster.slices); returns
        the selections to regenerate."""
        selections = []
        for c in results:
            state = self.iterations.get(c.group.iteration)
            if state is None:
                continue
            key, workers = group_key(c), worker
            if len(c.group.seeds) < len(state.by_key[key].seeds):
                whole = state.partial.setdefault(key, Partial(state.by_key[key])).add(c, worker)
                if whole is None:
                    continue
                c, workers = whole
                del state.partial[key]
            if not self.store.add(c, workers):
                continue
            state.candidates[key] = c
            if self.too_stale(c.version):
                self.drop(state, key, "stale")
                continue
            sel = self.selector.choose(c, self.keep(c))
            state.selections[key] = sel
            selections.append(sel)
        for state in self.iterations.values():
            if state.explore_done is None and len(state.candidates) == len(state.groups):
                state.explore_done = self.clock()
        return selections

    def candidates(self, sel: Selection) -> Candidates:
        """The whole group's explore results a selection was made from."""
        return self.iterations[sel.group.iteration].candidates[group_key(sel)]

    def regenerated(self, regen: Regenerated) -> None:
        sel = regen.selection
        state = self.iterations[sel.group.iteration]
        key = group_key(sel)
        self.store.record_regenerated(sel, list(regen.rewards), regen.worker)
        if self.too_stale(regen.version):
            self.drop(state, key, "stale")
            return
        state.regenerated[key] = regen

    def drop_stale_batches(self, state: IterationState) -> None:
        """Drop batches that fell more than max_policy_lag versions behind while they waited."""
        for key in [k for k, regen in state.regenerated.items() if self.too_stale(regen.version)]:
            del state.regenerated[key]
            self.drop(state, key, "stale")

    def trained(self, state: IterationState) -> None:
        for key in state.regenerated:
            self.store.close(key, "trained")

    def drop(self, state: IterationState, key: GroupKey, reason: str) -> None:
        state.dropped += 1
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.store.close(key, "dropped")

    def drop_unfinished(self) -> None:
        """Groups queued for an iteration that will not run are logged as dropped, never lost."""
        for state in self.iterations.values():
            for g in state.groups:
                key = (g.iteration, g.prompt_id)
                if key in self.store.open:
                    self.drop(state, key, "run_ended")
