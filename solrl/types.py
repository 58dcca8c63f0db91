"""Records that cross process boundaries. Only seeds and scalars travel from explore to select;
tensors travel once, from regeneration to the learner rank that trains them (solrl.learner.plan)."""

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

    @property
    def prompt(self) -> str:
        return self.group.prompt


@dataclass(frozen=True)
class Preview:
    """Explore audit work (rollout.precision_control): a group's audited seeds previewed at another
    precision, the ladder's rung below the one that explored them."""

    group: PromptGroup  # the audited seeds only
    precision: str

    @property
    def prompt(self) -> str:
        return self.group.prompt

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.group.seeds


@dataclass(frozen=True)
class TrainLabels:
    """What every learner rank needs of every row of a step (advantages are normalized over the
    whole batch): BF16 reward, prompt-group id and seed, in the step's row order."""

    rewards: torch.Tensor  # (B,)
    groups: torch.Tensor  # (B,)
    seeds: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return len(self.rewards)


@dataclass
class TrainBatch:
    """Regenerated clean samples with their conditioning and BF16 rewards.

    The conditioning is stored once per prompt: `cond` holds one row per distinct prompt and
    `cond_rows` the row of each sample (None: `cond` has a row per sample)."""

    x0: torch.Tensor  # (B, *sample_shape), fp32
    cond: Conditioning  # one row per prompt (or per sample, without cond_rows), in the samplers' compute dtype
    rewards: torch.Tensor  # (B,) BF16 rewards: the training labels
    groups: torch.Tensor  # (B,) prompt-group id of each sample (advantages are per group)
    seeds: torch.Tensor  # (B,) int64 seed of each sample
    version: int = 0  # policy version that produced the samples
    proxy_rewards: torch.Tensor | None = None  # (B,) low-precision rewards, for diagnostics only
    cond_rows: torch.Tensor | None = None  # (B,) int64 row of `cond` each sample is conditioned on

    def __post_init__(self) -> None:
        n = self.x0.shape[0]
        cond = len(self.cond) if self.cond_rows is None else len(self.cond_rows)
        sizes = {"cond": cond, "rewards": len(self.rewards), "groups": len(self.groups), "seeds": len(self.seeds)}
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise ValueError(f"TrainBatch fields disagree with x0's batch size {n}: {bad}")
        if self.cond_rows is not None and len(self.cond_rows) and int(self.cond_rows.max()) >= len(self.cond):
            raise ValueError(f"TrainBatch.cond_rows points past its {len(self.cond)} conditioning rows")

    def __len__(self) -> int:
        return self.x0.shape[0]

    def condition(self, rows: torch.Tensor) -> Conditioning:
        """The conditioning of the samples at index tensor `rows`, one row each."""
        return self.cond.select(rows if self.cond_rows is None else self.cond_rows[rows])

    def labels(self) -> TrainLabels:
        return TrainLabels(self.rewards, self.groups, self.seeds)

    def select(self, rows: torch.Tensor) -> TrainBatch:
        """The samples at index tensor `rows`, as a TrainBatch (sharing the per-prompt conditioning)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        proxy = None if self.proxy_rewards is None else self.proxy_rewards[rows]
        cond, cond_rows = (self.cond.select(rows), None) if self.cond_rows is None else (self.cond, self.cond_rows[rows])
        return TrainBatch(self.x0[rows], cond, self.rewards[rows], self.groups[rows], self.seeds[rows], self.version, proxy, cond_rows)

    @staticmethod
    def concat(batches: Sequence[TrainBatch]) -> TrainBatch:
        """One batch of all rows, in order; the version is the oldest one present."""
        if not batches:
            raise ValueError("cannot concatenate zero TrainBatches")
        proxies = [b.proxy_rewards for b in batches]
        rows, offset = [], 0
        for b in batches:
            rows.append((torch.arange(len(b)) if b.cond_rows is None else b.cond_rows) + offset)
            offset += len(b.cond)
        indexed = any(b.cond_rows is not None for b in batches)
        return TrainBatch(
            torch.cat([b.x0 for b in batches]),
            Conditioning.cat([b.cond for b in batches]),
            torch.cat([b.rewards for b in batches]),
            torch.cat([b.groups for b in batches]),
            torch.cat([b.seeds for b in batches]),
            min(b.version for b in batches),
            None if any(p is None for p in proxies) else torch.cat(proxies),
            torch.cat(rows) if indexed else None,
        )

    def split_by_group(self, parts: int) -> list[TrainBatch]:
        """`parts` mini-batches of whole prompt groups (as even as the group count allows), in
        first-appearance order, so per-group advantages stay computable within each."""
        order = list(dict.fromkeys(self.groups.tolist()))
        out = []
        for chosen in map(set, split_evenly(order, parts)):
            out.append(self.select(torch.tensor([i for i, g in enumerate(self.groups.tolist()) if g in chosen])))
        return out


def split_evenly(items: Sequence, parts: int) -> list[list]:
    """`items` in `parts` consecutive runs, as even as their count allows."""
    if not 1 <= parts <= len(items):
        raise ValueError(f"cannot split {len(items)} prompt groups into {parts} mini-batches; use 1..{len(items)}")
    return [list(items[k * len(items) // parts : (k + 1) * len(items) // parts]) for k in range(parts)]


def rank_rows(n: int, rank: int, world: int) -> torch.Tensor:
    """The rows of an n-row step that data-parallel rank `rank` of `world` trains: every world-th
    from its own, whatever their rewards (rows with non-finite rewards are then left out)."""
    return torch.arange(rank, n, world)


def per_selection(rewards: Sequence[float] | torch.Tensor, selections: Sequence[Selection]) -> list[list[float]]:
    """A batch's rewards (selection-then-seed order) as one list per selection."""
    values = rewards.tolist() if isinstance(rewards, torch.Tensor) else list(rewards)
    out, offset = [], 0
    for s in selections:
        out.append(values[offset : offset + len(s.seeds)])
        offset += len(s.seeds)
    return out
