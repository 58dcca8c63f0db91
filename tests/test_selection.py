"""Selection modes: correctness, purity, seeding, ties, non-finite rewards and N < K."""

import math

import numpy as np
import pytest

from solrl.selection import MODES, select


def test_best_worst_takes_top_and_bottom_halves():
    rewards = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6]
    s = select(rewards, 4, "best_worst")
    assert s.indices == [1, 5, 2, 6]  # best first, then worst, each in rank order
    assert s.excluded == [] and not s.short
    odd = select(rewards, 3, "best_worst")
    assert odd.indices == [1, 5, 2]  # ceil(k/2) best, floor(k/2) worst


def test_default_k_of_n_is_12_best_and_12_worst():
    rewards = np.random.default_rng(0).normal(size=96)
    s = select(rewards, 24)
    order = np.argsort(-rewards)
    assert set(s.indices[:12]) == set(order[:12].tolist())
    assert set(s.indices[12:]) == set(order[-12:].tolist())
    assert len(set(s.indices)) == 24


def test_ties_are_broken_by_candidate_index():
    rewards = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert select(rewards, 2, "best_worst").indices == [0, 1]
    assert select(rewards, 4, "best_worst").indices == [0, 2, 1, 3]
    assert select([2.0, 2.0, 2.0, 2.0], 2, "best_worst").indices == [0, 1]
    # deviation ties (|+1| == |-1|) also go to the earlier index
    assert select([1.0, -1.0, 0.0, 1.0, -1.0], 2, "mean_deviation").indices == [0, 1]


def test_mean_deviation_picks_largest_distance_from_mean():
    rewards = [0.0, 10.0, 4.0, 5.0, 6.0, -3.0]  # mean 22/6: deviations 3.67 6.33 0.33 1.33 2.33 6.67
    assert select(rewards, 2, "mean_deviation").indices == [5, 1]
    assert select(rewards, 3, "mean_deviation").indices == [5, 1, 0]


def test_random_modes_are_seeded_and_pure():
    rewards = list(np.linspace(0, 1, 20))
    a = select(rewards, 8, "random", seed=1)
    assert a == select(rewards, 8, "random", seed=1)
    assert a != select(rewards, 8, "random", seed=2)
    assert len(set(a.indices)) == 8
    e = select(rewards, 8, "extremes_random", seed=3)
    assert e.indices[:4] == [19, 18, 0, 1]  # half of k as best/worst extremes
    assert len(set(e.indices)) == 8 and set(e.indices[4:]).isdisjoint(e.indices[:4])
    assert e == select(rewards, 8, "extremes_random", seed=3)
    assert rewards == list(np.linspace(0, 1, 20))  # input untouched


@pytest.mark.parametrize("mode", MODES)
def test_non_finite_rewards_are_excluded_and_counted(mode):
    rewards = [0.3, math.nan, 0.9, math.inf, 0.1, -math.inf, 0.5, 0.7]
    s = select(rewards, 4, mode, seed=0)
    assert s.excluded == [1, 3, 5]
    assert not set(s.indices) & {1, 3, 5} and len(s.indices) == 4 and not s.short


@pytest.mark.parametrize("mode", MODES)
def test_too_few_valid_keeps_every_valid_candidate(mode):
    s = select([math.nan, 0.2, math.nan, 0.4, 0.1], 4, mode, seed=0)
    assert s.short and sorted(s.indices) == [1, 3, 4] and s.excluded == [0, 2]
    empty = select([math.nan] * 4, 2, mode)
    assert empty.indices == [] and empty.short and empty.excluded == [0, 1, 2, 3]


def test_n_smaller_than_k_is_a_clear_error():
    with pytest.raises(ValueError, match=r"selection.k=24 exceeds the group's 16 candidates"):
        select(np.zeros(16), 24)
    with pytest.raises(ValueError, match="selection.mode 'top' is unknown"):
        select([1.0, 2.0], 1, "top")
    with pytest.raises(ValueError, match="selection.k must be >= 1"):
        select([1.0], 0)
