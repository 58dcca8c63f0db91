"""Rewards by name, and a weighted sum of several, each part optionally gated by another: what a
run's `reward` config builds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

RewardName = Literal[
    "shapes", "shapes_strict", "shapes_size", "pickscore", "clipscore", "hpsv2", "aesthetic", "imagereward", "remote", "vlm_judge"
]
# what `solrl reward serve` can serve
LOCAL_REWARDS = ("shapes", "shapes_strict", "shapes_size", "pickscore", "clipscore", "hpsv2", "aesthetic", "imagereward")


class RewardSpec(BaseModel):
    """One reward: its name, the local folder of its weights, and its weight in a sum. A remote
    reward names the service's address instead (see solrl.rewards.remote for the failure policy)."""

    model_config = ConfigDict(extra="forbid")
    name: RewardName
    path: str | None = None
    weight: float = 1.0
    # The name of another part of the same reward list: this part pays in proportion to that
    # part's score (weight * this * gate), e.g. a preference that counts only where the caption holds.
    gate: RewardName | None = None
    device: str = Field(default="auto", description="'auto' = the first CUDA device if any, else cpu")
    # remote and vlm_judge:
    # remote: host:port of `solrl reward serve` (token from SOLRL_REWARD_TOKEN);
    # vlm_judge: the OpenAI-compatible base URL, e.g. http://judge:8000/v1 (key from api_key_env).
    address: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=3, ge=0)
    on_failure: Literal["raise", "nan"] = "raise"
    encoding: Literal["raw", "png"] = "raw"  # remote only
    # vlm_judge only:
    judge_model: str | None = None
    template: str | None = None  # must contain {prompt}; default solrl.rewards.vlm_judge.DEFAULT_TEMPLATE
    max_score: float = Field(default=10.0, gt=0)
    api_key_env: str = "OPENAI_API_KEY"

    @model_validator(mode="after")
    def _address_for_services(self) -> RewardSpec:
        served = self.name in ("remote", "vlm_judge")
        if served and not self.address:
            what = "host:port of a running `solrl reward serve`" if self.name == "remote" else "the judge's base URL, e.g. http://host:8000/v1"
            raise ValueError(f"reward {self.name!r} needs address: {what}")
        if not served and self.address:
            raise ValueError(f"reward {self.name!r} is computed locally; address applies to remote and vlm_judge only")
        if self.name == "vlm_judge" and not self.judge_model:
            raise ValueError("reward 'vlm_judge' needs judge_model: the model name the endpoint serves")
        return self


class WeightedReward:
    """sum_i weight_i * reward_i(images, prompts) [* gate_i(images, prompts)]; each reward is
    computed once per call, and each one's mean is kept for the metrics."""

    def __init__(self, parts: Sequence[tuple[str, float, object]], gates: dict[str, str] | None = None):
        if not parts:
            raise ValueError("a weighted reward needs at least one part")
        self.parts = list(parts)
        self.gates = gates or {}
        names = {n for n, _, _ in self.parts}
        for part, gate in self.gates.items():
            if gate not in names or gate == part:
                raise ValueError(f"reward part {part!r} is gated by {gate!r}, which is not another part of the reward list; add it (weight 0 if it should only gate)")
        self.name = "+".join(f"{w:g}*{n}" + (f"*{self.gates[n]}" if n in self.gates else "") for n, w, _ in self.parts)
        self.last_means: dict[str, float] = {}

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        values = {}
        for name, _, reward in self.parts:
            values[name] = reward(images, prompts).float().cpu()
            self.last_means[name] = float(values[name].mean()) if len(values[name]) else float("nan")
        total = torch.zeros(len(images), dtype=torch.float32)
        for name, weight, _ in self.parts:
            gate = self.gates.get(name)
            total += weight * values[name] * (values[gate] if gate else 1.0)
        return total


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def build_one(spec: RewardSpec):
    """The reward model one spec names, loaded from its local path."""
    if spec.name.startswith("shapes"):
        from solrl.rewards.shapes import ShapesReward

        return ShapesReward(spec.name)
    if spec.name == "remote":
        from solrl.rewards.remote import RemoteReward

        return RemoteReward(spec.address, timeout_s=spec.timeout_s, retries=spec.retries, on_failure=spec.on_failure, encoding=spec.encoding)
    if spec.name == "vlm_judge":
        from solrl.rewards.vlm_judge import DEFAULT_TEMPLATE, VLMJudge

        return VLMJudge(spec.address, spec.judge_model, spec.template or DEFAULT_TEMPLATE, spec.max_score, spec.api_key_env,
                        spec.timeout_s, spec.retries, on_failure=spec.on_failure)
    if spec.name == "imagereward":
        from solrl.rewards.image_reward import ImageReward

        return ImageReward.from_pretrained(spec.path, device=resolve_device(spec.device))
    from solrl.rewards import clip

    cls = {"pickscore": clip.PickScore, "clipscore": clip.ClipReward, "hpsv2": clip.HPSv2, "aesthetic": clip.AestheticReward}[spec.name]
    return cls.from_pretrained(spec.path, device=resolve_device(spec.device))


def build_reward(specs: Sequence[RewardSpec]):
    """A single reward as itself (weight 1, no gate), several as their (gated) weighted sum. Parts
    of the shapes world share one detector pass per batch."""
    if len(specs) == 1 and specs[0].weight == 1.0 and specs[0].gate is None:
        return build_one(specs[0])
    judge = None
    parts = []
    for s in specs:
        if s.name.startswith("shapes"):
            from solrl.rewards.shapes import ShapesJudge, ShapesReward

            judge = judge or ShapesJudge()
            parts.append((s.name, s.weight, ShapesReward(s.name, judge)))
        else:
            parts.append((s.name, s.weight, build_one(s)))
    return WeightedReward(parts, {s.name: s.gate for s in specs if s.gate})
