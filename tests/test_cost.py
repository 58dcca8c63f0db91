"""Modeled GPU cost: the calls-per-image rule against the solvers' real model calls, the
price table, and the meter's totals across a resume."""

import pytest
import torch

from solrl.config import ConfigError, load_config
from solrl.cost import CostMeter, calls_per_image
from solrl.sampling.loop import SamplingConfig
from solrl.sampling.schedules import time_grid
from solrl.sampling.solvers import solve


@pytest.mark.parametrize("solver", ["euler", "dpm2"])
@pytest.mark.parametrize("steps", [1, 2, 6, 10])
def test_calls_per_image_is_what_the_solver_calls(solver, steps):
    calls = []

    def velocity(x, t):
        calls.append(x.shape[0])
        return -x

    solve(velocity, torch.ones(3, 2), time_grid(steps, 1.0), solver)
    assert sum(calls) == 3 * calls_per_image(SamplingConfig(steps=steps, solver=solver))


def test_training_is_priced_by_the_model_calls_the_trainer_makes():
    """Every trained sample-time costs TRAIN_FORWARDS velocity calls (old, reference, policy) plus
    the policy's backward: what cost.train_per_sample_time prices by default."""
    from solrl.cost import BACKWARD_IN_FORWARDS, TRAIN_FORWARDS, CostConfig
    from solrl.learner.nft_trainer import NFTTrainer
    from solrl.models.tiny import TinyPolicyModel
    from solrl.types import TrainBatch

    model = TinyPolicyModel(size=8, width=16, layers=1)
    n, times = 6, 3
    batch = TrainBatch(x0=torch.randn(n, *model.sample_shape), cond=model.encode_prompts(["a shape"] * n), rewards=torch.arange(n).float(), groups=torch.zeros(n, dtype=torch.long), seeds=torch.arange(n))
    trainer = NFTTrainer(model, seed=0, train_steps=times, micro_batch=4)
    calls, velocity = [], model.velocity
    model.velocity = lambda x_t, *a, **k: calls.append(x_t.shape[0]) or velocity(x_t, *a, **k)
    trainer.step(batch)
    sample_times = n * trainer._times(batch).shape[1]
    assert sum(calls) == TRAIN_FORWARDS * sample_times
    assert CostConfig().train_per_sample_time == TRAIN_FORWARDS + BACKWARD_IN_FORWARDS


ROW = {"candidates": 100, "regenerated": 10}


def test_a_row_is_priced_by_purpose_and_precision():
    config = load_config(overrides=["rollout.explore.steps=6", "rollout.regenerate.steps=10", "rollout.explore_precision=nvfp4"])
    meter = CostMeter(config)
    spent = meter.iteration(ROW)
    assert spent == pytest.approx({"explore": 600 / 2.16, "regenerate": 100, "train": 10 * 6 * 5, "eval": 0}, abs=1e-3)
    # direct mode trains on the explored samples: no regeneration is paid for
    direct = CostMeter(load_config(overrides=["rollout.mode=direct", "selection.k=8"]))
    assert direct.iteration(ROW)["regenerate"] == 0


def test_an_eval_is_paid_with_the_next_row_and_totals_survive_a_resume():
    config = load_config(overrides=["eval.sampling.steps=5", "eval.precision=bf16"])
    meter = CostMeter(config)
    meter.eval({"images": 8})
    first = meter.iteration(ROW)
    assert first["eval"] == 40 and meter.iteration(ROW)["eval"] == 0
    resumed = CostMeter(config, meter.totals())
    resumed.iteration(ROW)
    meter.iteration(ROW)
    assert resumed.totals() == pytest.approx(meter.totals(), abs=2e-3)  # rows keep totals to 3 decimals


def test_a_precision_without_a_price_is_refused_by_name():
    config = load_config(overrides=["cost.per_call={bf16: 1.0}"])
    with pytest.raises(ValueError, match="cost.per_call has no price for precision 'nvfp4'"):
        CostMeter(config).iteration(ROW)


def test_prices_are_config_data():
    assert load_config(overrides=["cost.per_call.nvfp4=0.5"]).cost.per_call["nvfp4"] == 0.5
    with pytest.raises(ConfigError, match="train_per_sample_time"):
        load_config(overrides=["cost.train_per_sample_time=0"])
