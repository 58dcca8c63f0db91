"""How one learner step's samples reach the ranks that train them, and nothing more.

A regeneration worker leaves each group's samples in the object store as `world` shards (shard j
holds the group's rows i with i = j mod world) and the group's conditioning once (one row, the
samplers' compute dtype). The driver sends every rank a StepPlan, the labels of every row (all
ranks need every reward: advantages are normalized over the batch), and for each group only the
shard holding that rank's rows (rank_rows of the step's row order) with the conditioning. The
rank rebuilds its rows as a TrainBatch; the trainer takes the same step it takes on the whole
batch in one process (NFTTrainer.step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from solrl.models.base import Conditioning
from solrl.nbytes import tensor_bytes
from solrl.types import TrainBatch, TrainLabels, split_evenly


def shard_rows(rows: int, residue: int, world: int) -> range:
    """The rows of a group that its shard `residue` holds."""
    return range(residue, rows, world)


def shards_of(batch: TrainBatch, world: int) -> tuple[list[torch.Tensor], Conditioning]:
    """A one-prompt batch as it is stored for the learners: its x0 in one shard per residue that
    holds rows (min(rows, world) of them: with more ranks than rows, the rest get none of this
    group), and its conditioning once."""
    if batch.cond_rows is None or len(batch.cond) != 1:
        raise ValueError(f"a regenerated group is stored with one conditioning row; this batch has {len(batch.cond)}")
    return [batch.x0[torch.tensor(shard_rows(len(batch), j, world), dtype=torch.long)] for j in range(min(world, len(batch)))], batch.cond


def kept_bytes(shards: Sequence[torch.Tensor], cond: Conditioning) -> dict:
    """The stored outputs' bytes, as the driver counts them when it sends them to ranks: each
    shard's samples, and the conditioning's tensors."""
    return {"samples": [s.nbytes for s in shards], "conditioning": tensor_bytes(cond.tensors)}


@dataclass(frozen=True)
class GroupLabels:
    """One regenerated group's labels: its prompt id, the seeds kept and their BF16 rewards."""

    prompt_id: int
    seeds: tuple[int, ...]
    rewards: tuple[float, ...]


@dataclass(frozen=True)
class StepPlan:
    """A learner step over regenerated groups, in the order they were drawn, as
    `train.updates_per_iteration` optimizer steps (parts) over `world` ranks."""

    parts: tuple[tuple[GroupLabels, ...], ...]
    world: int
    version: int  # the oldest policy version among the samples

    @classmethod
    def of(cls, groups: Sequence[GroupLabels], updates: int, world: int, version: int) -> StepPlan:
        parts = split_evenly(list(groups), min(updates, len(groups)))
        return cls(tuple(tuple(p) for p in parts), world, version)

    def needs(self, rank: int) -> list[tuple[int, int, int]]:
        """(part, group index within the part, shard residue) of every shard `rank` trains from,
        in order."""
        out = []
        for p, part in enumerate(self.parts):
            offset = 0
            for g, group in enumerate(part):
                residue = (rank - offset) % self.world
                if shard_rows(len(group.seeds), residue, self.world):  # a group smaller than the group of ranks may skip some
                    out.append((p, g, residue))
                offset += len(group.seeds)
        return out

    def every_rank_needs(self) -> list[list[tuple[int, int, int]]]:
        """needs(rank) of every rank, in one pass over the groups (the driver's side)."""
        out: list[list[tuple[int, int, int]]] = [[] for _ in range(self.world)]
        for p, part in enumerate(self.parts):
            offset = 0
            for g, group in enumerate(part):
                for residue in range(min(len(group.seeds), self.world)):
                    out[(residue + offset) % self.world].append((p, g, residue))
                offset += len(group.seeds)
        return out

    def labels(self, part: int) -> TrainLabels:
        groups = self.parts[part]
        return TrainLabels(
            torch.tensor([r for g in groups for r in g.rewards], dtype=torch.float32),
            torch.tensor([g.prompt_id for g in groups for _ in g.seeds], dtype=torch.long),
            torch.tensor([s for g in groups for s in g.seeds], dtype=torch.long),
        )

    def shards(self, rank: int, pieces: Sequence[torch.Tensor | Conditioning]) -> list[TrainBatch]:
        """This rank's rows of each part, from `pieces`: (x0 shard, conditioning) for each entry of
        needs(rank), flattened."""
        needs = self.needs(rank)
        if len(pieces) != 2 * len(needs):
            raise ValueError(f"rank {rank} needs {len(needs)} (shard, conditioning) pairs, got {len(pieces)} pieces")
        out = []
        for p, part in enumerate(self.parts):
            mine = [(i, g, residue) for i, (q, g, residue) in enumerate(needs) if q == p]
            if not mine:
                rows = sum(len(g.seeds) for g in part)
                raise ValueError(f"a training batch of {rows} rows cannot be split over {self.world} learner ranks; keep more samples per update")
            rows = [(g, i) for _, g, residue in mine for i in shard_rows(len(part[g].seeds), residue, self.world)]
            out.append(
                TrainBatch(
                    x0=torch.cat([pieces[2 * i] for i, _, _ in mine]),
                    cond=Conditioning.cat([pieces[2 * i + 1] for i, _, _ in mine]),
                    rewards=torch.tensor([part[g].rewards[i] for g, i in rows], dtype=torch.float32),
                    groups=torch.tensor([part[g].prompt_id for g, _ in rows], dtype=torch.long),
                    seeds=torch.tensor([part[g].seeds[i] for g, i in rows], dtype=torch.long),
                    version=self.version,
                    cond_rows=torch.tensor([k for k, (_, g, residue) in enumerate(mine) for _ in shard_rows(len(part[g].seeds), residue, self.world)], dtype=torch.long),
                )
            )
        return out
