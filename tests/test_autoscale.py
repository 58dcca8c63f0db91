"""The rollout pool's scaling policy (solrl/autoscale.py): it grows while exploration is the
bottleneck and shrinks while regeneration is, only after `patience` iterations of the same
signal, one worker at a time, within its bounds; its decisions reach the metrics."""

import pytest

from solrl.autoscale import AutoscaleConfig, Autoscaler
from solrl.metrics import RunMetrics

EXPLORE_BOUND = {"rollout-0": 0.95, "rollout-1": 0.9, "regen-0": 0.2}
REGEN_BOUND = {"rollout-0": 0.2, "rollout-1": 0.3, "regen-0": 0.97}
BALANCED = {"rollout-0": 0.7, "rollout-1": 0.7, "regen-0": 0.7}


def policy(lo=1, hi=4, patience=2) -> Autoscaler:
    return Autoscaler(AutoscaleConfig(rollout={"min": lo, "max": hi}, patience=patience))


def test_grows_only_after_patience_iterations_of_the_same_signal():
    a = policy()
    assert a.observe(EXPLORE_BOUND, 2) is None
    decision = a.observe(EXPLORE_BOUND, 2)
    assert decision.size == 3 and "exploration is the bottleneck" in decision.reason
    assert a.observe(EXPLORE_BOUND, 3) is None  # the count starts over after a change
    assert a.observe(EXPLORE_BOUND, 3).size == 4


def test_a_broken_streak_starts_over():
    a = policy()
    for busy in (EXPLORE_BOUND, BALANCED, EXPLORE_BOUND, REGEN_BOUND, EXPLORE_BOUND):
        assert a.observe(busy, 2) is None


def test_shrinks_while_regeneration_is_the_bottleneck_and_keeps_its_bounds():
    a = policy(lo=2, hi=3)
    assert a.observe(REGEN_BOUND, 3) is None
    assert a.observe(REGEN_BOUND, 3).size == 2
    for _ in range(4):
        assert a.observe(REGEN_BOUND, 2) is None  # at min
    for _ in range(4):
        assert a.observe(EXPLORE_BOUND, 3) is None  # at max


def test_bad_bounds_name_the_fix():
    with pytest.raises(ValueError, match="min=3 is above max=2"):
        AutoscaleConfig(rollout={"min": 3, "max": 2})


def test_decisions_and_pool_sizes_reach_prometheus():
    m = RunMetrics()
    row = {"iteration": 0, "version": 1, "candidates": 4, "regenerated": 2, "spearman": 1.0, "kendall": 1.0, "loss": 0.1}
    m.observe_iteration(row | {"workers": {"rollout": 2, "regen": 1}, "autoscale": {"rollout": 1}})
    m.observe_iteration(row | {"iteration": 1, "workers": {"rollout": 3, "regen": 1}, "autoscale": {"rollout": -1}})
    text = m.render().decode()
    assert 'solrl_pool_workers{pool="rollout"} 3.0' in text
    assert 'solrl_autoscale_decisions_total{direction="up",pool="rollout"} 1.0' in text
    assert 'solrl_autoscale_decisions_total{direction="down",pool="rollout"} 1.0' in text
