"""Records that cross process boundaries. Only seeds and scalars travel from explore to select;
tensors travel once, in a TrainBatch, from regeneration to the learner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from solrl.models.base import Conditioning


@dataclass(frozen=True)
class PromptGroup:
    """One prompt and the N seeds to explore for it, tagged with the policy version to use."""

    prompt_id: int
    prompt: str
    seeds: tuple[int, ...]
    iteration: int
    version: int


@dataclass(frozen=True)
class Candidates:
    """Explore's output for one group: only seeds and scalars, never images."""

    group: PromptGroup
    proxy_rewards: tuple[float, ...]  # one per seed, in the group's seed order
    version: int  # policy version the sampler actually served
    seconds: float


@dataclass(frozen=True)
class Selection:
    """The seeds of one group chosen for regeneration, with their proxy rewards."""

    group: PromptGroup
    seeds: tuple[int, ...]
    proxy_rewards: tuple[float, ...]
    excluded: int = 0  # candidates dropped for a non-finite reward


@dataclass
class TrainBatch:
    """Regenerated clean samples with their conditioning and BF16 rewards."""

    x0: torch.Tensor  # (B, *sample_shape), fp32
    cond: Conditioning  # B rows
    rewards: torch.Tensor  # (B,) BF16 rewards: the training labels
    groups: torch.Tensor  # (B,) prompt-group id of each sample (advantages are per group)
    seeds: torch.Tensor  # (B,) int64 seed of each sample
    version: int = 0  # policy version that produced the samples
    proxy_rewards: torch.Tensor | None = None  # (B,) low-precision rewards, for diagnostics only

    def __post_init__(self) -> None:
        n = self.x0.shape[0]
        sizes = {"cond": len(self.cond), "rewards": len(self.rewards), "groups": len(self.groups), "seeds": len(self.seeds)}
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise ValueError(f"TrainBatch fields disagree with x0's batch size {n}: {bad}")

    def __len__(self) -> int:
        return self.x0.shape[0]

    def select(self, rows: torch.Tensor) -> TrainBatch:
        """The samples at index tensor `rows`, as a TrainBatch."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        proxy = None if self.proxy_rewards is None else self.proxy_rewards[rows]
        return TrainBatch(
            self.x0[rows], self.cond.select(rows), self.rewards[rows], self.groups[rows], self.seeds[rows], self.version, proxy
        )

    def without_non_finite(self) -> tuple[TrainBatch, int]:
        """The rows whose reward is finite, and how many were left out (quarantined)."""
        finite = torch.isfinite(self.rewards)
        bad = int((~finite).sum())
        if bad == len(self):
            raise ValueError(f"all {bad} rewards in the batch are non-finite; the reward is failing (check its service or inputs)")
        return (self.select(torch.flatnonzero(finite)) if bad else self), bad

    @staticmethod
    def concat(batches: Sequence[TrainBatch]) -> TrainBatch:
        """One batch of all rows, in order; the version is the oldest one present."""
        if not batches:
            raise ValueError("cannot concatenate zero TrainBatches")
        proxies = [b.proxy_rewards for b in batches]
        return TrainBatch(
            torch.cat([b.x0 for b in batches]),
            Conditioning({k: torch.cat([b.cond.tensors[k] for b in batches]) for k in batches[0].cond.tensors}),
            torch.cat([b.rewards for b in batches]),
            torch.cat([b.groups for b in batches]),
            torch.cat([b.seeds for b in batches]),
            min(b.version for b in batches),
            None if any(p is None for p in proxies) else torch.cat(proxies),
        )

    def split_by_group(self, parts: int) -> list[TrainBatch]:
        """`parts` mini-batches of whole prompt groups (as even as the group count allows), in
        first-appearance order, so per-group advantages stay computable within each."""
        order = list(dict.fromkeys(self.groups.tolist()))
        if not 1 <= parts <= len(order):
            raise ValueError(f"cannot split {len(order)} prompt groups into {parts} mini-batches; use 1..{len(order)}")
        out = []
        for k in range(parts):
            chosen = set(order[k * len(order) // parts : (k + 1) * len(order) // parts])
            out.append(self.select(torch.tensor([i for i, g in enumerate(self.groups.tolist()) if g in chosen])))
        return out


def per_selection(rewards: Sequence[float] | torch.Tensor, selections: Sequence[Selection]) -> list[list[float]]:
    """A batch's rewards (selection-then-seed order) as one list per selection."""
    values = rewards.tolist() if isinstance(rewards, torch.Tensor) else list(rewards)
    out, offset = [], 0
    for s in selections:
        out.append(values[offset : offset + len(s.seeds)])
        offset += len(s.seeds)
    return out
