"""DiffusionNFT: each formula on small hand-computed tensors, then the optimizer step on a model."""

import math

import pytest
import torch

from solrl.config import OptimConfig
from solrl.learner.nft_trainer import NFTTrainer
from solrl.models.base import OLD, POLICY
from solrl.models.tiny import TinyPolicyModel
from solrl.objectives.nft import (
    NFTConfig,
    adapt_kl_weight,
    ema_,
    ema_decay_at,
    group_advantages,
    interpolate,
    nft_loss,
    old_policy_decay,
    optimality_probability,
    pick_train_times,
)
from solrl.sampling import SamplingConfig, sample, time_grid
from solrl.types import TrainBatch


def test_advantage_is_per_prompt_mean_over_batch_std():
    # groups {1,2} and {3,4}: means 1.5 and 3.5; population std of [1,2,3,4] is sqrt(1.25)
    a = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 0, 1, 1]))
    expected = 0.5 / (math.sqrt(1.25) + 1e-4)
    assert torch.allclose(a, torch.tensor([-expected, expected, -expected, expected]), atol=1e-7)
    # group ids need not be contiguous or sorted: groups 7 -> {1, 3}, 3 -> {10, 20}
    r = torch.tensor([1.0, 10.0, 3.0, 20.0])
    std = float(r.std(correction=0))
    a = group_advantages(r, torch.tensor([7, 3, 7, 3]))
    assert torch.allclose(a, torch.tensor([-1.0, -5.0, 1.0, 5.0]) / (std + 1e-4), atol=1e-6)
    # equal rewards: zero advantage, no division by zero
    assert torch.equal(group_advantages(torch.ones(4), torch.tensor([0, 0, 1, 1])), torch.zeros(4))


def test_optimality_probability_clips_at_five():
    a = torch.tensor([-10.0, -5.0, -2.5, 0.0, 2.5, 5.0, 10.0])
    assert torch.equal(optimality_probability(a), torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]))


def test_train_times_are_a_random_subset_of_the_rollout_grid():
    grid = time_grid(10)
    times = pick_train_times(grid, 0.6, torch.Generator().manual_seed(0))
    assert len(times) == 6 and len(set(times)) == 6
    assert all(any(abs(t - g) < 1e-12 for g in grid[:-1].tolist()) for t in times)
    assert 0.0 not in times
    other = pick_train_times(grid, 0.6, torch.Generator().manual_seed(1))
    assert times != other
    assert pick_train_times(grid, 0.6, torch.Generator().manual_seed(0)) == times
    assert len(pick_train_times(grid, 0.01, torch.Generator())) == 1


def test_interpolation():
    x0, eps = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -2.0]])
    assert torch.equal(interpolate(x0, eps, torch.tensor([0.25])), torch.tensor([[1.5, 1.0]]))


# One sample, two elements: x0 = [1, 0], x_t = [1, 1], t = 0.5, v_old = v_ref = 0, v_theta = [1, 4], r = 0.75.
X0, XT, T, R = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([0.5]), torch.tensor([0.75])
ZERO = torch.zeros(1, 2)


def test_loss_by_hand_beta_1():
    # v+ = v_theta = [1, 4]: x0+ = [0.5, -1], err = [-0.5, -1], mean sq 0.625 / mean abs 0.75 = 5/6
    # v- = -v_theta:         x0- = [1.5, 3],  err = [0.5, 3],   mean sq 4.625 / mean abs 1.75
    # kl = mean([1, 16]) = 8.5; the policy term is scaled by adv_clip = 5 (the reference code's factor)
    v_theta = torch.tensor([[1.0, 4.0]], requires_grad=True)
    loss, stats = nft_loss(v_theta, ZERO, ZERO, X0, XT, T, R)
    term_pos, term_neg = 5 / 6, 4.625 / 1.75
    assert stats["term_pos"] == pytest.approx(term_pos) and stats["term_neg"] == pytest.approx(term_neg)
    assert stats["kl"] == pytest.approx(8.5)
    assert loss.item() == pytest.approx(5 * (0.75 * term_pos + 0.25 * term_neg) + 1e-4 * 8.5, rel=1e-6)
    # the adaptive weight is a stop-gradient: d term+/d v = 2 err (-t) / (n w+), etc.
    loss.backward()
    grad_pos = torch.tensor([0.25, 0.5]) / 0.75  # 2 * err * (-0.5) / 2 / 0.75
    grad_neg = torch.tensor([0.25, 1.5]) / 1.75  # v- = -v_theta flips the sign back
    expected = 5 * (0.75 * grad_pos + 0.25 * grad_neg) + 1e-4 * torch.tensor([1.0, 4.0])
    assert torch.allclose(v_theta.grad, expected.unsqueeze(0), atol=1e-6)


def test_loss_by_hand_beta_2_and_v_old():
    # beta = 2, v_old = 0: v+ = 2 v_theta = [2, 8] -> err [-1, -3] -> 5 / 2; v- = [-2, -8] -> err [1, 5] -> 13 / 3
    v_theta = torch.tensor([[1.0, 4.0]])
    loss, _ = nft_loss(v_theta, ZERO, ZERO, X0, XT, T, R, NFTConfig(beta=2.0))
    assert float(loss) == pytest.approx(5 * (0.75 * 2.5 + 0.25 * 13 / 3) / 2 + 1e-4 * 8.5, rel=1e-6)
    # v_theta = v_old = [2, 2]: v+ = v- = [2, 2] -> x0± = [0, 0], err = [-1, 0] -> 0.5 / 0.5 = 1
    same = torch.tensor([[2.0, 2.0]])
    loss, stats = nft_loss(same, same, ZERO, X0, XT, T, R)
    assert stats["term_pos"] == pytest.approx(1.0) and stats["term_neg"] == pytest.approx(1.0)
    assert float(loss) == pytest.approx(5 * 1.0 + 1e-4 * 4.0, rel=1e-6)


def test_weight_floor_when_prediction_is_exact():
    # x_t - t v = x0 exactly: both errors are zero, the 1e-5 floor keeps the weight finite
    v = ((XT - X0) / 0.5).requires_grad_(True)
    loss, _ = nft_loss(v, v.detach(), v.detach(), X0, XT, T, R)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(v.grad).all()


def test_old_policy_schedule_and_ema():
    assert [old_policy_decay(s) for s in (0, 1, 250, 500, 10_000)] == [0.0, 0.001, 0.25, 0.5, 0.5]
    # the evaluation EMA warms up as the reference code's does: min((1 + s) / (10 + s), 0.9)
    assert [ema_decay_at(s) for s in (0, 1, 10, 80, 81, 1000)] == [0.1, 2 / 11, 11 / 20, 81 / 90, 0.9, 0.9]
    assert ema_decay_at(0, NFTConfig(ema_warmup=False)) == 0.9
    uncapped = NFTConfig(ema_decay=1.0)  # the warm-up throughout: differs from the default only past step 80
    assert [ema_decay_at(s, uncapped) for s in (0, 80, 81, 1000)] == [0.1, 81 / 90, 82 / 91, 1001 / 1010]
    with pytest.raises(ValueError, match=r"train.nft.ema_decay=1.0 with train.nft.ema_warmup=false never moves"):
        NFTConfig(ema_decay=1.0, ema_warmup=False)
    target = [torch.tensor([1.0, -2.0])]
    ema_(target, [torch.tensor([3.0, 2.0])], 0.9)
    assert torch.allclose(target[0], torch.tensor([1.2, -1.6]))


# -- the optimizer step on a real model ------------------------------------------------------------

BRIGHT, DARK = 0.6, -0.6


def _contrast_batch(model, n=8):
    """One prompt; half the samples bright (reward 1), half dark (reward 0)."""
    g = torch.Generator().manual_seed(0)
    level = torch.tensor([BRIGHT] * (n // 2) + [DARK] * (n // 2))
    x0 = level.view(-1, 1, 1, 1) + 0.05 * torch.randn(n, *model.sample_shape, generator=g)
    return TrainBatch(
        x0=x0,
        cond=model.encode_prompts(["a shape"] * n),
        rewards=(level > 0).float(),
        groups=torch.zeros(n, dtype=torch.long),
        seeds=torch.arange(100, 100 + n),
    )


def _eval_loss(model, batch, cfg):
    """The NFT loss at fixed times and noise."""
    g = torch.Generator().manual_seed(99)
    r = optimality_probability(group_advantages(batch.rewards, batch.groups))
    total = 0.0
    with torch.no_grad():
        for t in (0.9, 0.6, 0.3):
            tt = torch.full((len(batch),), t)
            x_t = interpolate(batch.x0, torch.randn(batch.x0.shape, generator=g), tt)
            v = [model.velocity(x_t, tt, batch.cond, adapter=a) for a in (POLICY, OLD, None)]
            total += float(nft_loss(v[0], v[1], v[2], batch.x0, x_t, tt, r, cfg)[0])
    return total


def test_steps_on_a_fixed_batch_lower_the_loss():
    model = TinyPolicyModel(size=8, width=32, layers=1)
    batch = _contrast_batch(model)
    # hold the old policy fixed (eta = 1) so the objective itself stays fixed across steps
    cfg = NFTConfig(old_decay_rate=1.0, old_decay_max=1.0)
    trainer = NFTTrainer(model, cfg, OptimConfig(lr=1e-2), seed=0)
    losses = [_eval_loss(model, batch, cfg)]
    for _ in range(8):
        trainer.step(batch)
        losses.append(_eval_loss(model, batch, cfg))
    # Most of the loss is the irreducible error of predicting x0 from noise, so the drop is small
    # in relative terms; the evaluation is deterministic, so any drop is real. Measured: 2.840 -> 2.827.
    assert losses[-1] < losses[4] < losses[0] - 0.005, losses


def test_training_moves_samples_toward_high_reward():
    model = TinyPolicyModel(size=8, width=32, layers=1)
    batch = _contrast_batch(model)
    trainer = NFTTrainer(model, optim=OptimConfig(lr=1e-2), seed=0)
    cond = model.encode_prompts(["a shape"] * 16)
    seeds = list(range(16))
    cfg = SamplingConfig(steps=10)

    def brightness():
        return float(sample(model.inference_copy("fp32", adapter=POLICY), cond, seeds, cfg).mean())

    start = brightness()
    for _ in range(15):
        stats = trainer.step(batch)
    end = brightness()
    # measured: mean pixel -0.016 -> 0.65 (bright samples sit at +0.6, dark at -0.6)
    assert end - start > 0.3, (start, end)
    assert stats["step"] == 15 and stats["old_decay"] == pytest.approx(0.015)


def test_old_policy_and_ema_follow_their_schedules():
    model = TinyPolicyModel(size=8, width=32, layers=1)
    batch = _contrast_batch(model, n=4)
    trainer = NFTTrainer(model, optim=OptimConfig(lr=1e-2), seed=0)
    old_before = model.adapter_state(OLD)
    ema_before = {k: v.clone() for k, v in trainer.ema_state().items()}
    trainer.step(batch)
    theta = model.adapter_state(POLICY)
    old_after, ema_after = model.adapter_state(OLD), trainer.ema_state()
    for k in theta:
        assert torch.allclose(old_after[k], 0.001 * old_before[k] + 0.999 * theta[k], atol=1e-7)
        # step 0 of the warm-up: decay 0.1
        assert torch.allclose(ema_after[k], 0.1 * ema_before[k] + 0.9 * theta[k], atol=1e-7)
    assert any(not torch.equal(theta[k], old_before[k]) for k in theta)


def test_micro_batching_does_not_change_the_step():
    results = []
    for micro in (None, 3):
        model = TinyPolicyModel(size=8, width=32, layers=1)
        trainer = NFTTrainer(model, optim=OptimConfig(lr=1e-2), seed=5, micro_batch=micro)
        for _ in range(2):
            trainer.step(_contrast_batch(model, n=8))
        results.append(model.adapter_state(POLICY))
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-6), k


def test_group_noise_shares_one_draw_per_group_and_still_learns():
    model = TinyPolicyModel(size=8, width=32, layers=1)
    batch = _contrast_batch(model, n=8)
    batch.groups[4:] = 1  # two prompt groups
    rows = torch.arange(8)
    shape = batch.x0.shape[1:]
    shared = NFTTrainer(model, NFTConfig(group_noise=True), seed=0)._noise(batch, rows, 0, shape)
    own = NFTTrainer(model, seed=0)._noise(batch, rows, 0, shape)
    assert all(torch.equal(shared[i], shared[0]) for i in range(4)) and all(torch.equal(shared[i], shared[4]) for i in range(4, 8))
    assert not torch.equal(shared[0], shared[4])
    assert all(not torch.equal(own[i], own[j]) for i in range(8) for j in range(i))
    # the contrast within a group still trains: one group, shared noise, samples move to the bright mode
    model = TinyPolicyModel(size=8, width=32, layers=1)
    batch = _contrast_batch(model)
    trainer = NFTTrainer(model, NFTConfig(group_noise=True), OptimConfig(lr=1e-2), seed=0)
    cond, seeds = model.encode_prompts(["a shape"] * 16), list(range(16))

    def brightness():
        return float(sample(model.inference_copy("fp32", adapter=POLICY), cond, seeds, SamplingConfig(steps=10)).mean())

    start = brightness()
    for _ in range(15):
        trainer.step(batch)
    assert brightness() - start > 0.3


def test_each_sample_draws_its_own_training_times():
    model = TinyPolicyModel(size=8, width=32, layers=1)
    batch = _contrast_batch(model, n=8)
    trainer = NFTTrainer(model, seed=0, train_steps=10)
    times = trainer._times(batch)
    grid = set(trainer.grid[:-1].tolist())
    assert times.shape == (8, 6)  # 0.6 of 10 steps
    assert all(any(abs(t - g) < 1e-6 for g in grid) for row in times.tolist() for t in row)
    assert all(row == sorted(row, reverse=True) for row in times.tolist())  # schedule order, 1 -> 0
    assert len({tuple(row) for row in times.tolist()}) > 1  # not one draw for all
    # keyed by sample seed: the same sample gets the same times whatever rows surround it
    assert torch.equal(trainer._times(batch.select(torch.tensor([5, 2])))[0], times[5])
    shared = NFTTrainer(model, NFTConfig(per_sample_times=False), seed=0)._times(batch)
    assert all(torch.equal(shared[i], shared[0]) for i in range(8))


def test_policy_loss_is_scaled_by_adv_clip():
    g = torch.Generator().manual_seed(0)
    v_theta, v_old, v_ref, x0, eps = (torch.randn(4, 3, 4, 4, generator=g) for _ in range(5))
    t = torch.full((4,), 0.5)
    x_t = interpolate(x0, eps, t)
    r = torch.tensor([0.1, 0.4, 0.6, 0.9])
    one = nft_loss(v_theta, v_old, v_ref, x0, x_t, t, r, NFTConfig(adv_clip=1.0, kl_weight=0.0))[1]["policy_loss"]
    five = nft_loss(v_theta, v_old, v_ref, x0, x_t, t, r, NFTConfig(kl_weight=0.0))[1]["policy_loss"]
    assert five == pytest.approx(5 * one, rel=1e-6)


def test_adaptive_kl_weight_moves_halfway_to_a_level_proportional_to_the_kl_over_its_target():
    cfg = NFTConfig(kl_weight=1e-4, kl_target=0.02, kl_weight_max=1.0)
    level = lambda excess: 1e-4 + (1.0 - 1e-4) * excess  # kl_weight at the target, kl_weight_max at twice it
    assert adapt_kl_weight(0.1, 0.03, cfg) == pytest.approx(0.5 * 0.1 + 0.5 * level(0.5))  # 1.5x the target: halfway to the middle
    assert adapt_kl_weight(0.1, 5.0, cfg) == pytest.approx(0.55)  # far above: halfway to the cap, however far
    assert adapt_kl_weight(0.4, 0.01, cfg) == pytest.approx(0.5 * 0.4 + 0.5 * 1e-4)  # under it: halfway back to the floor
    assert adapt_kl_weight(1.0, 0.05, cfg) == 1.0  # held at the cap
    weight = 1e-4  # a run whose KL stays under the target keeps kl_weight exactly, step after step
    for kl in (0.0, 0.019, 0.02, 0.005) * 25:
        weight = adapt_kl_weight(weight, kl, cfg)
    assert weight == 1e-4
    for _ in range(60):  # and from anywhere, it returns to the floor and the cap without passing them
        weight = adapt_kl_weight(weight, 0.1, cfg)
        assert weight <= 1.0
    assert weight == pytest.approx(1.0)
    assert adapt_kl_weight(0.0, 0.03, NFTConfig(kl_weight=0.0, kl_target=0.02)) == pytest.approx(0.25)  # a floor of 0 works
    assert adapt_kl_weight(0.4, 1.0, NFTConfig()) == 1e-4  # no target: the fixed weight
    with pytest.raises(ValueError, match=r"train.nft.kl_weight_max=0.001 is below train.nft.kl_weight=0.01"):
        NFTConfig(kl_weight=0.01, kl_target=0.02, kl_weight_max=1e-3)


def test_a_trainer_adapts_its_kl_weight_to_the_measured_kl_and_checkpoints_it():
    """Each step trains at the weight the steps before it set; the weight is in the checkpoint
    tensors, so a restored trainer steps as the uninterrupted one does; without a target the
    weight never moves."""
    from solrl.learner.trainer_state import load_trainer_state, trainer_state

    cfg = NFTConfig(kl_weight=1e-4, kl_target=1e-9)  # any drift from the base is over the target
    model = TinyPolicyModel(size=8, width=32, layers=1)
    trainer = NFTTrainer(model, cfg, OptimConfig(lr=1e-2), seed=0)
    used = [trainer.step(_contrast_batch(model, n=8))["kl_weight"] for _ in range(3)]
    # step 0 starts at the base (LoRA B = 0): KL 0, held; then halfway to the cap (1) a step
    assert used[:2] == [1e-4, 1e-4] and used[2] == pytest.approx(0.50005) and trainer.kl_weight == pytest.approx(0.750025)
    state = trainer_state(model, trainer)
    twin = TinyPolicyModel(size=8, width=32, layers=1)
    resumed = NFTTrainer(twin, cfg, OptimConfig(lr=1e-2), seed=0)
    load_trainer_state(twin, resumed, state, trainer.step_count)
    assert resumed.kl_weight == trainer.kl_weight
    a, b = trainer.step(_contrast_batch(model, n=8)), resumed.step(_contrast_batch(twin, n=8))
    assert a["kl_weight"] == b["kl_weight"] == pytest.approx(0.750025) and a["loss"] == b["loss"]
    fixed = NFTTrainer(TinyPolicyModel(size=8, width=32, layers=1), NFTConfig(), OptimConfig(lr=1e-2), seed=0)
    assert [fixed.step(_contrast_batch(fixed.model, n=8))["kl_weight"] for _ in range(2)] == [1e-4, 1e-4]
