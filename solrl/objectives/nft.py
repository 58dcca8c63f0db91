"""The DiffusionNFT objective (arXiv 2509.16117) exactly as docs/method.md states it.

Pure functions of tensors: advantages, optimality probabilities, training times, the loss,
and the schedules of the old policy and the evaluation EMA. No model, no optimizer here.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


class NFTConfig(BaseModel):
    """DiffusionNFT hyper-parameters; defaults are docs/method.md's."""

    model_config = ConfigDict(extra="forbid")
    beta: float = Field(default=1.0, gt=0, description="Mixing of v_theta into v+ / v-.")
    adv_clip: float = Field(default=5.0, gt=0, description="r = 0.5 + 0.5 clip(A / adv_clip, -1, 1); the loss is scaled by it.")
    adv_eps: float = Field(default=1e-4, gt=0, description="A = (R - mean over the prompt) / (std over the batch + adv_eps).")
    kl_weight: float = Field(default=1e-4, ge=0, description="Weight of mean((v_theta - v_ref)^2).")
    kl_target: float | None = Field(
        default=None,
        gt=0,
        description="Not in the paper: an adaptive KL weight. After each step the weight moves halfway to a level set by the "
        "step's KL (mean (v_theta - v_ref)^2): kl_weight while the KL is at or under this target, kl_weight_max from twice "
        "it, linear between. A run whose KL stays under it trains as with kl_weight alone. None: kl_weight throughout.",
    )
    kl_weight_max: float = Field(
        default=1.0,
        gt=0,
        description="The adaptive KL weight's cap (kl_target). 1.0 held the KL of 160-iteration strict runs "
        "on three seeds; unbounded doubling reached 52 and pulled the policy back to the base (docs/method.md).",
    )
    timestep_fraction: float = Field(default=0.6, gt=0, le=1, description="Share of the sampler grid's times trained per step.")
    weight_floor: float = Field(default=1e-5, gt=0, description="Floor of the adaptive x0-space weight.")
    old_decay_rate: float = Field(default=1e-3, ge=0, description="Old-policy decay eta = min(rate * step, old_decay_max).")
    old_decay_max: float = Field(default=0.5, ge=0, le=1, description="Largest old-policy decay.")
    ema_decay: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Largest decay of the evaluation EMA of theta. 1.0 with ema_warmup: the warm-up uncapped, a power-function "
        "EMA (weight on step i of s about proportional to (i / s)^8: mean age s / 10, nine tenths of the weight on the last "
        "quarter) however long the run is; the cap 0.9 averages about the last 10 steps from step 80 on.",
    )
    ema_warmup: bool = Field(
        default=True, description="EMA decay min((1 + s) / (10 + s), ema_decay) at step s (the reference), so a short run's EMA is not mostly the initial adapter."
    )
    per_sample_times: bool = Field(default=True, description="Each sample draws its own training times (the reference); False: one draw per step.")
    group_noise: bool = Field(
        default=False,
        description="Not in the paper: one training-noise draw per prompt group and time (common random numbers).",
    )

    @model_validator(mode="after")
    def _adaptive_weight_has_room(self) -> NFTConfig:
        if self.kl_target is not None and self.kl_weight_max < self.kl_weight:
            raise ValueError(f"train.nft.kl_weight_max={self.kl_weight_max} is below train.nft.kl_weight={self.kl_weight}, the adaptive weight's floor; set kl_weight_max >= kl_weight")
        return self

    @model_validator(mode="after")
    def _ema_moves(self) -> NFTConfig:
        if self.ema_decay == 1.0 and not self.ema_warmup:
            raise ValueError("train.nft.ema_decay=1.0 with train.nft.ema_warmup=false never moves the evaluation EMA off the initial adapter; set ema_warmup=true (the uncapped warm-up) or ema_decay < 1")
        return self


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A = (R - mean of R within its prompt group) / (std of R over the whole batch + eps).

    The std is the population std (ddof = 0) of the raw rewards of every sample in the batch.
    """
    rewards = rewards.double()
    groups = torch.as_tensor(groups, device=rewards.device)
    _, inverse = torch.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if len(inverse) else 0
    sums = torch.zeros(n_groups, dtype=rewards.dtype, device=rewards.device).index_add_(0, inverse, rewards)
    counts = torch.bincount(inverse, minlength=n_groups).to(rewards.dtype)
    means = (sums / counts)[inverse]
    std = rewards.std(correction=0) if len(rewards) > 1 else rewards.new_zeros(())
    return ((rewards - means) / (std + eps)).float()


def optimality_probability(advantages: torch.Tensor, clip: float = 5.0) -> torch.Tensor:
    """r = 0.5 + 0.5 * clip(A / clip, -1, 1), in [0, 1]."""
    return 0.5 + 0.5 * torch.clamp(advantages / clip, -1.0, 1.0)


def pick_train_times(grid: torch.Tensor, fraction: float, generator: torch.Generator) -> list[float]:
    """A random subset, round(fraction * steps) of them (at least one), of the grid's step times,
    in schedule order.

    `grid` is the rollout schedule (steps + 1 times, 1 -> 0); the final t = 0 is not a step.
    """
    times = grid[:-1]
    k = max(1, round(fraction * len(times)))
    order = torch.randperm(len(times), generator=generator)[:k]
    return [float(times[i]) for i in sorted(order.tolist())]


def ema_decay_at(step: int, config: NFTConfig | None = None) -> float:
    """Decay of the evaluation EMA at step s (from 0): min((1 + s) / (10 + s), ema_decay) with
    warm-up, else ema_decay."""
    cfg = config or NFTConfig()
    return min((1 + step) / (10 + step), cfg.ema_decay) if cfg.ema_warmup else cfg.ema_decay


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps, with t per sample."""
    t = t.reshape(-1, *([1] * (x0.dim() - 1)))
    return (1.0 - t) * x0 + t * eps


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


def nft_loss(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    v_ref: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    r: torch.Tensor,
    config: NFTConfig | None = None,
    kl_weight: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DiffusionNFT loss of one batch at times t (per sample), averaged over the batch;
    `kl_weight` overrides the config's (an adaptive weight, NFTConfig.kl_target).

    v+ = (1 - beta) v_old + beta v_theta,  v- = (1 + beta) v_old - beta v_theta;
    x0± = x_t - t v±;  term± = mean((x0± - x0)^2) / stopgrad(mean|x0± - x0|) per sample;
    loss = adv_clip * mean(r term+ + (1 - r) term-) / beta + kl_weight * mean((v_theta - v_ref)^2).
    The policy term's factor adv_clip (5) is the reference code's, which scales it by adv_clip_max.
    """
    cfg = config or NFTConfig()
    v_old, v_ref, x0, x_t = v_old.detach(), v_ref.detach(), x0.detach(), x_t.detach()
    beta = cfg.beta
    tb = t.reshape(-1, *([1] * (x0.dim() - 1))).to(v_theta.dtype)
    v_pos = (1.0 - beta) * v_old + beta * v_theta
    v_neg = (1.0 + beta) * v_old - beta * v_theta

    def term(v: torch.Tensor) -> torch.Tensor:
        err = (x_t - tb * v) - x0
        with torch.no_grad():
            weight = _per_sample_mean(err.abs().double()).clamp(min=cfg.weight_floor).to(err.dtype)
        return _per_sample_mean(err**2) / weight

    pos, neg = term(v_pos), term(v_neg)
    r = r.to(pos.dtype)
    policy_loss = (r * pos + (1.0 - r) * neg).mean() / beta * cfg.adv_clip
    kl = _per_sample_mean((v_theta - v_ref) ** 2).mean()
    loss = policy_loss + (cfg.kl_weight if kl_weight is None else kl_weight) * kl
    stats = {
        "loss": float(loss.detach()),
        "policy_loss": float(policy_loss.detach()),
        "kl": float(kl.detach()),
        "term_pos": float(pos.detach().mean()),
        "term_neg": float(neg.detach().mean()),
    }
    return loss, stats


def adapt_kl_weight(weight: float, kl: float, config: NFTConfig) -> float:
    """The KL weight of the next step, after a step that measured `kl` at `weight` (kl_target).

    Proportional to the KL's excess over the target, with no integral: multiplying the weight by
    kl / target each step (Ziegler et al. 2019's rule, bounded) integrates the error, and since the
    KL answers the weight many steps late it swung the weight between its floor and cap about
    every 40 iterations. Moving halfway a step smooths one noisy step's KL, and keeps the weight
    exactly at kl_weight while the KL stays under the target."""
    if config.kl_target is None:
        return config.kl_weight
    excess = min(max(kl / config.kl_target - 1.0, 0.0), 1.0)
    wanted = config.kl_weight + (config.kl_weight_max - config.kl_weight) * excess
    return wanted if weight == wanted else 0.5 * weight + 0.5 * wanted


def old_policy_decay(step: int, config: NFTConfig | None = None) -> float:
    """eta = min(0.001 * step, 0.5): how much of the old policy survives an update at `step`."""
    cfg = config or NFTConfig()
    return min(cfg.old_decay_rate * step, cfg.old_decay_max)


@torch.no_grad()
def ema_(target: Iterable[torch.Tensor], source: Iterable[torch.Tensor], decay: float) -> None:
    """target <- decay * target + (1 - decay) * source, in place."""
    for tgt, src in zip(target, source, strict=True):
        tgt.mul_(decay).add_(src.detach().to(tgt.dtype), alpha=1.0 - decay)
