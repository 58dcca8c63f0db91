"""A learner step's wire format (solrl/learner/plan.py): each regenerated group stored as one x0
shard per rank and its conditioning once, and each rank rebuilding, from the shards it is sent,
exactly the rows the one-process step gives it (rank_rows of the step's order), with their
labels and conditioning; nothing a rank does not train is sent to it."""

import pytest
import torch

from solrl.learner.plan import GroupLabels, StepPlan, shards_of
from solrl.models.base import Conditioning
from solrl.types import TrainBatch, rank_rows


def _group(prompt_id: int, rows: int) -> TrainBatch:
    """One regenerated group as a sampler returns it: conditioning once, rewards per row."""
    g = torch.Generator().manual_seed(prompt_id)
    return TrainBatch(
        x0=torch.randn(rows, 2, 3, generator=g),
        cond=Conditioning({"h": torch.full((1, 4), float(prompt_id)), "mask": torch.tensor([[prompt_id, 1]])}),
        rewards=torch.rand(rows, generator=g),
        groups=torch.full((rows,), prompt_id),
        seeds=torch.arange(rows) + 100 * prompt_id,
        version=3,
        cond_rows=torch.zeros(rows, dtype=torch.long),
    )


@pytest.mark.parametrize("world, updates, sizes", [(2, 1, [8, 8, 8]), (3, 2, [5, 7, 4, 5]), (2, 2, [2, 3, 1]), (5, 1, [2, 3, 1])])
def test_each_rank_rebuilds_exactly_its_rows_of_the_one_process_step(world, updates, sizes):
    groups = [_group(10 + i, n) for i, n in enumerate(sizes)]
    stored = [shards_of(g, world) for g in groups]
    assert [len(shards) for shards, _ in stored] == [min(n, world) for n in sizes]  # no empty shard is stored
    plan = StepPlan.of([GroupLabels(int(g.groups[0]), tuple(g.seeds.tolist()), tuple(g.rewards.tolist())) for g in groups], updates, world, 3)
    assert plan.every_rank_needs() == [plan.needs(rank) for rank in range(world)]
    whole = TrainBatch.concat(groups).split_by_group(updates)  # what the single-process loop trains
    assert len(plan.parts) == len(whole)
    for rank in range(world):
        needs = plan.needs(rank)
        order = [g for part in plan.parts for g in part]
        offsets = [sum(len(p) for p in plan.parts[:i]) for i in range(len(plan.parts))]
        pieces = [x for p, g, residue in needs for x in (stored[offsets[p] + g][0][residue], stored[offsets[p] + g][1])]
        assert len(order) == len(groups)
        mine = plan.shards(rank, pieces)
        for p, (part, shard) in enumerate(zip(whole, mine)):
            expected = part.select(rank_rows(len(part), rank, world))
            assert torch.equal(shard.x0, expected.x0) and torch.equal(shard.seeds, expected.seeds)
            assert torch.equal(shard.rewards, expected.rewards) and torch.equal(shard.groups, expected.groups)
            rows = torch.arange(len(shard))
            got, want = shard.condition(rows), expected.condition(rows)
            assert all(torch.equal(got[k], want[k]) for k in ("h", "mask"))
            labels = plan.labels(p)
            assert torch.equal(labels.rewards, part.rewards) and torch.equal(labels.seeds, part.seeds)
        # a rank is sent one shard and the conditioning of a group only if it trains a row of it
        for p, g, residue in needs:
            assert len(stored[offsets[p] + g][0][residue]) > 0


def test_a_part_smaller_than_the_group_of_ranks_is_refused():
    plan = StepPlan.of([GroupLabels(1, (5,), (0.5,)), GroupLabels(2, (6, 7), (0.1, 0.2))], 2, 2, 0)
    with pytest.raises(ValueError, match="a training batch of 1 rows cannot be split over 2 learner ranks"):
        plan.shards(1, [torch.zeros(1, 2), Conditioning({"h": torch.zeros(1, 4)})])


def test_a_group_is_stored_with_one_conditioning_row():
    batch = _group(1, 4)
    with pytest.raises(ValueError, match="one conditioning row"):
        shards_of(TrainBatch(batch.x0, Conditioning({"h": torch.zeros(4, 4)}), batch.rewards, batch.groups, batch.seeds), 2)
