"""What a run's config names, built: the policy model and the reward."""

from __future__ import annotations

from solrl.config import ModelConfig
from solrl.models.shapes import ShapesModel
from solrl.rewards.shapes import ShapesReward


def build_policy(model: ModelConfig) -> ShapesModel:
    """The policy a run trains: pretrained base weights plus fresh LoRA adapters."""
    return ShapesModel.from_pretrained(model.path, lora=model.lora)


def build_reward(name: str):
    """The reward model named in the config."""
    if name == "shapes":
        return ShapesReward()
    raise ValueError(f"reward {name!r} is unknown; choose 'shapes'")
