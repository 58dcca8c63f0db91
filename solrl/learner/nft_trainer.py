"""One DiffusionNFT optimizer step per call on a PolicyModel: times, noise, loss, AdamW, then
the old-policy and evaluation-EMA updates.

Noise and training times are drawn per sample from (seed, step, sample seed, ...), never from a
shared stream, so splitting the batch across ranks or micro-batches trains on the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from solrl.config import OptimConfig, TrainConfig
from solrl.models.base import OLD, POLICY
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
from solrl.optim import lr_at
from solrl.sampling import SamplingConfig
from solrl.sampling.noise import hash_ints, seed_noise
from solrl.sampling.schedules import time_grid
from solrl.types import TrainBatch, TrainLabels, rank_rows


class NFTTrainer:
    """Owns the optimizer, the step counter and the evaluation EMA of one policy."""

    def __init__(
        self,
        model,
        nft: NFTConfig | None = None,
        optim: OptimConfig | None = None,
        train_steps: int = 10,
        shift: float = 1.0,
        seed: int = 0,
        micro_batch: int | None = None,
        total_steps: int | None = None,
    ):
        self.model = model
        self.nft = nft or NFTConfig()
        self.optim_cfg = optim or OptimConfig()
        self.grid = time_grid(train_steps, shift)  # the rollout schedule the samples came from
        self.seed = seed
        self.micro_batch = micro_batch
        self.total_steps = total_steps  # the run's optimizer steps, for optim.schedule
        self.step_count = 0
        self.kl_weight = self.nft.kl_weight  # moves with the measured KL under nft.kl_target
        params = model.trainable_parameters()
        # foreach=False: one implementation for plain and sharded (DTensor) parameters, so a
        # data-parallel group and its single-process reference round alike
        self.optimizer = torch.optim.AdamW(
            params, lr=self.optim_cfg.lr, betas=self.optim_cfg.betas, weight_decay=self.optim_cfg.weight_decay, foreach=False
        )
        self.ema = [p.detach().clone() for p in params]
        # set by a sharded learner rank: gradient_sync(False) keeps a pass's gradient local
        self.gradient_sync: Callable[[bool], None] | None = None
        # set by a replicated learner rank: adds this rank's gradients to the other ranks', in place
        self.reduce_gradients: Callable[[list[torch.Tensor]], None] | None = None


    @classmethod
    def for_run(cls, model, train: TrainConfig, sampling: SamplingConfig, seed: int) -> NFTTrainer:
        """The trainer of a run's `train` settings, on the times of `sampling` (the regeneration
        sampler's steps and shift)."""
        total = train.iterations * train.updates_per_iteration
        return cls(model, train.nft, train.optim, sampling.steps, sampling.shift, seed, train.micro_batch, total)

    def _keys(self, batch: TrainBatch, rows: torch.Tensor) -> list[tuple[int, ...]]:
        # Keyed by sample seed (or by group under group_noise), never by row position.
        return [(-1, int(g)) for g in batch.groups[rows]] if self.nft.group_noise else [(int(s),) for s in batch.seeds[rows]]

    def _noise(self, batch: TrainBatch, rows: torch.Tensor, time_index: int, shape) -> torch.Tensor:
        return torch.stack([seed_noise(hash_ints(self.seed, self.step_count, *k, time_index), shape) for k in self._keys(batch, rows)])

    def _times(self, batch: TrainBatch) -> torch.Tensor:
        """(rows, k) training times: each sample's own subset of the grid (per_sample_times),
        or one subset for the whole step."""
        if not self.nft.per_sample_times:
            return torch.tensor([self._pick_times()] * len(batch), dtype=torch.float32)
        return torch.tensor([self._pick_times(-3, *k) for k in self._keys(batch, torch.arange(len(batch)))], dtype=torch.float32)

    def _pick_times(self, *key: int) -> list[float]:
        generator = torch.Generator().manual_seed(hash_ints(self.seed, self.step_count, -1, *key))
        return pick_train_times(self.grid, self.nft.timestep_fraction, generator)

    def step(self, batch: TrainBatch, world: int = 1) -> dict[str, float]:
        """One optimizer step on `batch`, taken as a data-parallel group of `world` ranks takes it,
        in one process: each rank's rows (solrl.types.rank_rows) accumulated alone, then the ranks'
        gradients summed, which with two ranks (where the sum is exact) is bit-for-bit the group's
        step. Returns the loss statistics averaged over times."""
        shards = {rank: batch.select(rank_rows(len(batch), rank, world)) for rank in range(world)}
        return self.adapt(self._step(batch.labels(), shards, world))

    def step_shard(self, labels: TrainLabels, shard: TrainBatch, rank: int, world: int) -> dict[str, float]:
        """Data-parallel rank `rank`'s part of one optimizer step: `labels` are every row's, `shard`
        holds this rank's rows (rank_rows of the labels' order); the group sums the gradients, and
        then its statistics, which it passes to `adapt`."""
        return self._step(labels, {rank: shard}, world)

    def adapt(self, stats: dict[str, float]) -> dict[str, float]:
        """After a step whose statistics are the whole batch's: the next step's KL weight."""
        self.kl_weight = adapt_kl_weight(self.kl_weight, stats["kl"], self.nft)
        return stats

    def _step(self, labels: TrainLabels, shards: dict[int, TrainBatch], world: int) -> dict[str, float]:
        # A sample whose BF16 reward failed (e.g. a remote reward under on_failure="nan") is left
        # out of the step, never trained on with a made-up reward.
        finite = torch.isfinite(labels.rewards)
        n = int(finite.sum())
        if n == 0:
            raise ValueError(f"all {len(labels)} rewards in the batch are non-finite; the reward is failing (check its service or inputs)")
        counts = [int(finite[rank_rows(len(labels), rank, world)].sum()) for rank in range(world)]
        if min(counts) == 0:
            raise ValueError(f"a training batch of {n} rows cannot be split over {world} learner ranks; keep more samples per update")
        r_all = torch.full((len(labels),), float("nan"))
        advantages = group_advantages(labels.rewards[finite], labels.groups[finite], self.nft.adv_eps)
        r_all[finite] = optimality_probability(advantages, self.nft.adv_clip)
        # Every rank runs the same number of forward/backward passes (FSDP's collectives pair up).
        chunks = 1 if self.micro_batch is None else min(math.ceil(max(counts) / self.micro_batch), min(counts))
        params = self.model.trainable_parameters()
        per_rank: list[dict[str, float]] = []
        summed: list[torch.Tensor | None] = [None] * len(params)
        for rank, shard in shards.items():
            keep = finite[rank_rows(len(labels), rank, world)].nonzero().flatten()
            shard, r = shard.select(keep), r_all[rank_rows(len(labels), rank, world)][keep].to(self.model.device)
            self.optimizer.zero_grad(set_to_none=True)
            per_rank.append({})
            self._accumulate(shard, r, self._times(shard), torch.tensor_split(torch.arange(len(shard)), chunks), per_rank[-1], n)
            summed = [g if s is None else (s if g is None else s + g) for s, g in zip(summed, (p.grad for p in params))]
        # each rank's statistics summed apart, then across ranks, as the group's all-reduce sums them:
        # the adaptive KL weight follows the KL, so the two must agree to the bit
        totals = {k: sum(part[k] for part in per_rank) for k in per_rank[0]}
        if self.reduce_gradients is not None:
            summed = [torch.zeros_like(p) if g is None else g for p, g in zip(params, summed)]  # every rank sends every one
            self.reduce_gradients(summed)
        for p, g in zip(params, summed):
            p.grad = g
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.optim_cfg.grad_clip)
        lr = lr_at(self.step_count, self.total_steps, self.optim_cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step_count += 1
        eta = old_policy_decay(self.step_count, self.nft)
        ema_(self.model.adapter_parameters(OLD).values(), self.model.adapter_parameters(POLICY).values(), eta)
        ema_(self.ema, params, ema_decay_at(self.step_count - 1, self.nft))
        totals.update(grad_norm=float(grad_norm), old_decay=eta, kl_weight=self.kl_weight, lr=lr, step=self.step_count, quarantined=len(labels) - n)
        return totals

    def _accumulate(self, batch: TrainBatch, r: torch.Tensor, times: torch.Tensor, chunks: tuple[torch.Tensor, ...], totals: dict[str, float], n: int) -> None:
        """Backpropagate the loss of the rows in `chunks` at every training time into the grads,
        each row's share of the mean over the step's `n` rows; pass j trains each row at its j-th
        time (`times` is rows x k)."""
        # Batches cross processes on the CPU; the model may live on a GPU.
        model, device, per_row = self.model, self.model.device, times.shape[1]
        passes = [(ti, idx) for ti in range(per_row) for idx in chunks]
        for i, (ti, idx) in enumerate(passes):
            x0, cond = batch.x0[idx].to(device), batch.condition(idx).to(device)
            eps = self._noise(batch, idx, ti, x0.shape[1:]).to(device=device, dtype=x0.dtype)
            tt = times[idx, ti].to(device)
            x_t = interpolate(x0, eps, tt)
            with torch.no_grad():
                v_old = model.velocity(x_t, tt, cond, adapter=OLD)
                v_ref = model.velocity(x_t, tt, cond, adapter=None)
            v_theta = model.velocity(x_t, tt, cond, adapter=POLICY)
            loss, stats = nft_loss(v_theta, v_old, v_ref, x0, x_t, tt, r[idx], self.nft, self.kl_weight)
            if self.gradient_sync is not None:
                # A sharded model reduces the rank's accumulated gradient once, after its last
                # pass, so the sum runs in the order the one-process step sums in.
                self.gradient_sync(i == len(passes) - 1)
            # Each (time, micro-batch) contributes its share of the mean over times and samples.
            weight = x0.shape[0] / (n * per_row)
            (loss * weight).backward()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v * weight

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The evaluation EMA as an adapter state (same keys as model.adapter_state())."""
        keys = list(self.model.adapter_parameters(POLICY).keys())
        return {k: v.detach().float().cpu().clone() for k, v in zip(keys, self.ema, strict=True)}
