"""What a run's config names, built: the policy model and the reward."""

from __future__ import annotations

from typing import TYPE_CHECKING

from solrl.config import ModelConfig
from solrl.rewards.registry import build_reward, resolve_device

if TYPE_CHECKING:  # the model stack (peft, transformers) loads only where a policy is built
    from solrl.models.lora_policy import DiffusersPolicy

__all__ = ["build_policy", "build_reward"]


def build_policy(model: ModelConfig) -> DiffusersPolicy:
    """The policy a run trains: pretrained base weights plus fresh LoRA adapters."""
    device = resolve_device(model.device)
    if not model.cudnn_attention:  # process-wide, before anything runs attention
        import torch

        torch.backends.cuda.enable_cudnn_sdp(False)
    if model.kind == "shapes":
        from solrl.models.shapes import ShapesModel

        return ShapesModel.from_pretrained(model.path, lora=model.lora).to(device)
    from solrl.models.diffusers_models import POLICIES

    options = {"resolution": model.resolution, "max_sequence_length": model.max_sequence_length}
    if model.kind == "flux":
        options["guidance"] = model.guidance
    if model.kind == "sana":
        options["complex_human_instruction"] = model.complex_human_instruction
    return POLICIES[model.kind].from_pretrained(model.path, lora=model.lora, device=device, **options)


