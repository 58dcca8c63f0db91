"""Explore tasks smaller than a prompt group: a group's seeds shared out over several tasks, so a
pool of more workers than an iteration has groups still has work, and an iteration's last wave of
tasks (which the regeneration tail and the learner wait on) is short. The seeds of a slice are
explored exactly as in the whole group (a seed fixes its noise), and the selector ranks the union
once every slice is in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from solrl.types import Candidates, PromptGroup, split_evenly

TASKS_PER_WORKER = 16  # explore tasks each rollout worker gets an iteration, at least (when seeds allow): short tasks, a short last wave
MIN_SEEDS = 24  # seeds a task explores, at least: fewer underfill a GPU's batch (the paper regenerates 24 a group)


def explore_pieces(setting: int, groups: int, seeds: int, workers: int) -> int:
    """How many tasks each group's seeds are shared out over: `setting` (cluster.explore_split)
    when set, else enough for TASKS_PER_WORKER tasks a worker, no task under MIN_SEEDS seeds."""
    if setting:
        return min(setting, seeds)
    wanted = math.ceil(TASKS_PER_WORKER * workers / max(1, groups))
    return max(1, min(wanted, seeds // MIN_SEEDS))


def pieces_for(config, groups: Sequence[PromptGroup], workers: int, last: int, log: Callable[[str], None]) -> int:
    """An iteration's explore pieces a group (explore_pieces), logged when it differs from `last`."""
    seeds = max((len(g.seeds) for g in groups), default=0)
    pieces = explore_pieces(config.cluster.explore_split, len(groups), seeds, workers)
    if pieces != last:
        log(f"explore: each group's {seeds} seeds in {pieces} task{'s' if pieces > 1 else ''} for {workers} rollout workers")
    return pieces


def slices(group: PromptGroup, pieces: int) -> list[PromptGroup]:
    """`group` as `pieces` groups of consecutive seeds (the group itself when pieces is 1)."""
    if pieces <= 1:
        return [group]
    return [dataclasses.replace(group, seeds=tuple(part)) for part in split_evenly(group.seeds, pieces)]


@dataclasses.dataclass
class Partial:
    """A group's explore results as its slices come in: by first seed, the slice's candidates and
    the worker that explored it."""

    group: PromptGroup
    parts: dict[int, tuple[Candidates, str]] = dataclasses.field(default_factory=dict)

    def add(self, c: Candidates, worker: str) -> tuple[Candidates, list[str]] | None:
        """Record a slice; once every seed is in, the whole group's candidates (in its seed order,
        at the oldest version among the slices) and each seed's explore worker."""
        self.parts[c.group.seeds[0]] = (c, worker)  # a slice delivered twice replaces itself
        reward, by = {}, {}
        for part, w in self.parts.values():
            reward.update(zip(part.group.seeds, part.proxy_rewards))
            by.update(dict.fromkeys(part.group.seeds, w))
        if len(reward) < len(self.group.seeds):
            return None
        seeds = self.group.seeds
        version = min(p.version for p, _ in self.parts.values())
        seconds = sum(p.seconds for p, _ in self.parts.values())
        return Candidates(self.group, tuple(reward[s] for s in seeds), version, seconds), [by[s] for s in seeds]

