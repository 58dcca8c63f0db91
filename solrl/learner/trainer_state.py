"""A trainer's whole state as plain tensors, for checkpoints and a restarted learner group: the
policy and old adapters, the EMA and AdamW's moments, unsharded. One format for the
single-process run and the FSDP2 ranks (each takes back its own shards), so either resumes
from the other's checkpoint tensors."""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from solrl.learner.nft_trainer import NFTTrainer
from solrl.models.base import OLD, POLICY


def full(t: torch.Tensor) -> torch.Tensor:
    """A plain CPU tensor of a (possibly sharded) parameter or state; collective on DTensors."""
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().float().cpu().clone()


def shard_like(whole: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return distribute_tensor(whole.to(like.dtype), like.device_mesh, like.placements) if isinstance(like, DTensor) else whole


def trainer_state(policy, trainer: NFTTrainer) -> dict[str, torch.Tensor]:
    """Every tensor a checkpoint needs, unsharded; collective when the policy is sharded."""
    out = {}
    for prefix, adapter in (("policy", POLICY), ("old", OLD)):
        out.update({f"{prefix}.{k}": full(p) for k, p in policy.adapter_parameters(adapter).items()})
    params = dict(policy.adapter_parameters(POLICY))
    out.update({f"ema.{k}": full(e) for k, e in zip(params, trainer.ema, strict=True)})
    for key, p in params.items():
        for name, value in trainer.optimizer.state.get(p, {}).items():
            out[f"optim.{key}.{name}"] = full(value) if value.dim() else value.detach().float().cpu().reshape(()).clone()
    out["kl_weight"] = torch.tensor(trainer.kl_weight, dtype=torch.float64)  # nft.kl_target's adaptive weight
    return out


@torch.no_grad()
def load_trainer_state(policy, trainer: NFTTrainer, tensors: dict[str, torch.Tensor], step: int) -> None:
    """Restore what trainer_state returned, at optimizer step `step`."""
    for prefix, adapter in (("policy", POLICY), ("old", OLD)):
        for k, p in policy.adapter_parameters(adapter).items():
            p.copy_(shard_like(tensors[f"{prefix}.{k}"], p))
    params = policy.adapter_parameters(POLICY)
    for (k, _), e in zip(params.items(), trainer.ema, strict=True):
        e.copy_(shard_like(tensors[f"ema.{k}"], e))
    trainer.optimizer.state.clear()
    for k, p in params.items():
        names = [n for n in ("step", "exp_avg", "exp_avg_sq") if f"optim.{k}.{n}" in tensors]
        if names:
            trainer.optimizer.state[p] = {n: tensors[f"optim.{k}.{n}"].clone() if n == "step" else shard_like(tensors[f"optim.{k}.{n}"], p) for n in names}
    trainer.step_count = step
    trainer.kl_weight = float(tensors["kl_weight"]) if "kl_weight" in tensors else trainer.nft.kl_weight  # older checkpoints: the fixed weight
