"""train.optim: the rate each optimizer step takes (its schedule), in a trainer and across a resume."""

import math

import pytest
import torch
from test_nft import _contrast_batch

from solrl.config import OptimConfig, TrainConfig, load_config
from solrl.learner.nft_trainer import NFTTrainer
from solrl.models.tiny import TinyPolicyModel
from solrl.optim import lr_at
from solrl.sampling import SamplingConfig


def test_cosine_holds_the_rate_then_decays_to_its_floor():
    cosine = OptimConfig(lr=1.0, schedule="cosine", decay_from=0.5, min_lr_ratio=0.1)
    rates = [lr_at(s, 100, cosine) for s in range(100)]
    assert rates[:51] == [1.0] * 51  # the first half at the full rate
    assert rates[75] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # half-way down
    assert all(a > b for a, b in zip(rates[50:], rates[51:]))  # then strictly down
    assert 0.1 < rates[-1] < 0.1 + 1e-2  # the last step just above the floor, never at it
    # decay from the first step, to zero
    assert [lr_at(s, 4, OptimConfig(lr=2.0, schedule="cosine")) for s in range(4)] == pytest.approx([2.0, 1.0 + math.sqrt(0.5), 1.0, 1.0 - math.sqrt(0.5)])
    # constant, or a run of unknown length: the rate never moves
    assert {lr_at(s, 10, OptimConfig(lr=3e-4)) for s in range(20)} == {3e-4}
    assert lr_at(7, None, cosine) == 1.0


def test_decay_settings_without_a_cosine_are_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"train.optim.decay_from=0.5 has no effect with train.optim.schedule='constant'; set schedule: cosine"):
        OptimConfig(decay_from=0.5)
    with pytest.raises(ValueError, match=r"min_lr_ratio"):
        load_config(overrides=["train.optim.min_lr_ratio=0.1"])


def test_a_trainer_steps_at_the_scheduled_rate_and_a_resumed_one_continues_the_curve():
    from solrl.learner.trainer_state import load_trainer_state, trainer_state

    train = TrainConfig(iterations=4, optim=OptimConfig(lr=1e-2, schedule="cosine"))
    grid = SamplingConfig(steps=10)
    model = TinyPolicyModel(size=8, width=32, layers=1)
    trainer = NFTTrainer.for_run(model, train, grid, seed=0)
    rates = [trainer.step(_contrast_batch(model, n=8))["lr"] for _ in range(2)]
    assert rates == [lr_at(s, 4, train.optim) for s in range(2)] == [1e-2, pytest.approx(0.5e-2 * (1 + math.cos(math.pi / 4)))]
    assert trainer.optimizer.param_groups[0]["lr"] == rates[-1]
    twin = TinyPolicyModel(size=8, width=32, layers=1)
    resumed = NFTTrainer.for_run(twin, train, grid, seed=0)
    load_trainer_state(twin, resumed, trainer_state(model, trainer), trainer.step_count)
    a, b = trainer.step(_contrast_batch(model, n=8)), resumed.step(_contrast_batch(twin, n=8))
    assert a["lr"] == b["lr"] == pytest.approx(0.5e-2) and a["loss"] == b["loss"]
    assert all(torch.equal(p, q) for p, q in zip(model.trainable_parameters(), twin.trainable_parameters()))
    # two optimizer steps an iteration: the schedule runs over all eight
    per_two = NFTTrainer.for_run(TinyPolicyModel(size=8, width=32, layers=1), TrainConfig(iterations=4, updates_per_iteration=2, optim=train.optim), grid, seed=0)
    assert per_two.total_steps == 8
