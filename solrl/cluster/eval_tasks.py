"""Periodic evals as tasks among the pipeline's, not a barrier for the pools.

The eval of the EMA after iteration i is cut into slices; the dispatcher hands a slice to a
sampler the pipeline left idle (solrl.cluster.dispatch), so exploring and regenerating go on while
it runs, and iteration i's metrics row waits for the figures (the driver holds it). A slice whose
sampler died, or whose reward worker died while scoring it, is queued again with the same seeds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from solrl.config import RunConfig
from solrl.evaluation import eval_plan, merge_measures, summarize_run


@dataclass
class PendingEval:
    """An eval of one adapter (a ref of `adapter_bytes`), its slices' measures as they come in."""

    config: RunConfig
    pairs: list[tuple[str, int]]
    adapter: object
    adapter_bytes: int
    slices: int
    measures: dict[int, dict] = field(default_factory=dict)  # slice index -> its measures

    @property
    def done(self) -> bool:
        return len(self.measures) == self.slices

    def summary(self) -> dict:
        """The eval's figures, once every slice is in."""
        parts = [self.measures[i] for i in range(self.slices)]
        return summarize_run(self.config, self.pairs, merge_measures(parts), base=False)


@dataclass(frozen=True)
class EvalSlice:
    """One sampler task of a PendingEval: the eval plan's pairs[start:stop]."""

    eval: PendingEval
    index: int
    pairs: tuple

    def finished(self, measures: dict) -> None:
        self.eval.measures[self.index] = measures


def eval_slices(config: RunConfig, adapter, adapter_bytes: int, samplers: int, validation: bool = False) -> tuple[PendingEval, list[EvalSlice]]:
    """An eval of `adapter` (on the validation prompts with `validation`) and its slices: one a
    sampler at least, and none of more images than a quarter of a regeneration task's samples
    (selection.k), so a regeneration never waits long behind one. (FLUX.1's table on the virtual
    clock, 6 prompts an iteration, eval.every=1: the evals added 1.5 % to the run with slices of
    k/4, 4.6 % with slices of k, 19 % as a barrier.)"""
    pairs = eval_plan(config, base=False, validation=validation)
    n = min(len(pairs), max(samplers, -(-len(pairs) // max(1, config.selection.k // 4))))
    pending = PendingEval(config, pairs, adapter, adapter_bytes, n)
    return pending, [EvalSlice(pending, i, tuple(pairs[len(pairs) * i // n : len(pairs) * (i + 1) // n])) for i in range(n)]


@dataclass
class Finished:
    """A trained iteration's row and what a checkpoint written right after it needs: the policy
    version and the candidate log's parts."""

    row: dict
    version: int
    log_parts: int
    evals: dict[str, PendingEval] = field(default_factory=dict)  # row key ('eval', 'validation') -> its eval
    held: bool = False  # whether later steps could launch before the row was given out
    saved: object = None  # then: the learner state's ref at `version`, for a checkpoint after the row
    adapters: tuple[dict, int] | None = None  # refs of the adapter states the evals measured, and the bytes of one (train.keep_best may keep them)
    audit: object = None  # its explore audit (solrl.cluster.audit_desk.IterationAudit), with rollout.precision_control


class HeldRows:
    """Finished iterations' rows, given out in order, each once its eval and explore audit (if
    any) are in; the audit's figures are taken in that order, so its controller sees them so."""

    def __init__(self):
        self.held: deque[Finished] = deque()
        self.last: Finished | None = None  # the row given out last

    def ready(self) -> bool:
        if not self.held:
            return False
        first = self.held[0]
        return all(e.done for e in first.evals.values()) and (first.audit is None or first.audit.done)

    def take(self) -> Iterator[Finished]:
        while self.ready():
            self.last = finished = self.held.popleft()
            for key, pending in finished.evals.items():
                finished.row[key] = pending.summary()
            if finished.audit is not None:
                finished.row["audit"] = finished.audit.report()
            yield finished
