"""Selector: a complete group's proxy rewards -> the seeds to regenerate."""

from __future__ import annotations

from solrl.config import SelectionConfig
from solrl.selection import select
from solrl.types import Candidates, Selection


class Selector:
    """Applies one selection mode, seeded per group so any process picks the same seeds."""

    def __init__(self, config: SelectionConfig):
        self.config = config

    def choose(self, candidates: Candidates, keep: tuple[int, ...] = ()) -> Selection:
        """The group's seeds chosen for regeneration, with their proxy rewards; `keep`: seeds chosen
        whatever their rewards (an in-batch explore audit's, solrl.audit_schedule)."""
        index = {s: i for i, s in enumerate(candidates.group.seeds)}
        chosen = select(candidates.proxy_rewards, self.config.k, self.config.mode, seed=candidates.group.seeds[0], keep=[index[s] for s in keep])
        return Selection(
            candidates.group,
            tuple(candidates.group.seeds[i] for i in chosen.indices),
            tuple(candidates.proxy_rewards[i] for i in chosen.indices),
            excluded=len(chosen.excluded),
        )
