"""Rewards by name, and a weighted sum of several, each part optionally gated by another: what a
run's `reward` config builds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

RewardName = Literal[
    "shapes", "shapes_strict", "shapes_size", "pickscore", "clipscore", "hpsv2", "aesthetic", "imagereward", "remote", "vlm_judge"
]
# what `solrl reward serve` can serve
LOCAL_REWARDS = ("shapes", "shapes_strict", "shapes_size", "pickscore", "clipscore", "hpsv2", "aesthetic", "imagereward")


class _Part(BaseModel):
    """What every part of a reward list has: its weight in the sum and an optional gate."""

    model_config = ConfigDict(extra="forbid")
    world: ClassVar[str] = "prompts"  # the world (solrl.world) whose prompts this reward reads
    name: RewardName = Field(description="Which reward (the fields below depend on it).")  # narrowed by each kind
    weight: float = Field(default=1.0, description="Weight of this part in the reward's sum.")
    gate: RewardName | None = Field(
        default=None,
        description="Another part of the same list: this part pays in proportion to that part's score (weight * this * gate), "
        "e.g. a preference that counts only where the caption holds.",
    )


class ShapesRewardSpec(_Part):
    """The shapes world's detector: caption score, strict pass, or size preference."""

    world: ClassVar[str] = "shapes"

    name: Literal["shapes", "shapes_strict", "shapes_size"] = Field(description="shapes: caption score; shapes_strict: 1 for a strict pass; shapes_size: object size.")


class ModelRewardSpec(_Part):
    """A reward model loaded from a local folder."""

    name: Literal["pickscore", "clipscore", "hpsv2", "aesthetic", "imagereward"] = Field(description="The reward model.")
    path: str | None = Field(default=None, description="Local folder of the reward model's weights (no hub downloads).")
    device: str = Field(default="auto", description="'auto' = the first CUDA device if any, else cpu.")


class _Served(_Part):
    address: str = Field(min_length=1)
    timeout_s: float = Field(default=30.0, gt=0, description="Seconds one request may take.")
    retries: int = Field(default=3, ge=0, description="Retries of a failed request: remote retries UNAVAILABLE only (a request past its deadline may still be scored, so it is not resent); vlm_judge also retries timeouts.")
    on_failure: Literal["raise", "nan"] = Field(default="raise", description="When retries run out: fail the run, or NaN rewards (quarantined and counted).")


class RemoteRewardSpec(_Served):
    """A reward computed by `solrl reward serve` (token from SOLRL_REWARD_TOKEN)."""

    name: Literal["remote"] = Field(description="A reward served over gRPC.")
    address: str = Field(min_length=1, description="host:port of a running `solrl reward serve`.")
    encoding: Literal["raw", "png"] = Field(default="raw", description="How images travel to the service.")
    tls_root_cert: str | None = Field(default=None, description="PEM file of the certificate (or its CA) a TLS service presents; None: plaintext.")


class JudgeRewardSpec(_Served):
    """A vision-language model behind an OpenAI-compatible endpoint, asked to score each image."""

    name: Literal["vlm_judge"] = Field(description="A VLM judge over HTTP.")
    address: str = Field(min_length=1, description="The endpoint's base URL, e.g. http://judge:8000/v1.")
    judge_model: str = Field(min_length=1, description="The model name the endpoint serves.")
    template: str | None = Field(default=None, description="Question with {prompt}; default solrl.rewards.vlm_judge.DEFAULT_TEMPLATE.")
    max_score: float = Field(default=10.0, gt=0, description="The judge's top score (rewards are score / max_score).")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")


# One part of a run's reward, its fields chosen by its name.
RewardSpec = Annotated[Union[ShapesRewardSpec, ModelRewardSpec, RemoteRewardSpec, JudgeRewardSpec], Field(discriminator="name")]  # noqa: UP007
_SPEC = TypeAdapter(RewardSpec)


def reward_spec(**fields) -> ShapesRewardSpec | ModelRewardSpec | RemoteRewardSpec | JudgeRewardSpec:
    """The RewardSpec its fields describe (the name picks the kind)."""
    return _SPEC.validate_python(fields)


class WeightedReward:
    """sum_i weight_i * reward_i(images, prompts) [* gate_i(images, prompts)]; each reward is
    computed once per call, and each one's mean is kept for the metrics. Gates belong to parts, not
    to names: a reward listed twice, once gated and once not, is gated once (`gates[i]` is part
    i's gate, the name of another part, or None)."""

    def __init__(self, parts: Sequence[tuple[str, float, object]], gates: Sequence[str | None] | None = None):
        if not parts:
            raise ValueError("a weighted reward needs at least one part")
        self.parts = list(parts)
        self.gates = list(gates) if gates is not None else [None] * len(self.parts)
        if len(self.gates) != len(self.parts):
            raise ValueError(f"a weighted reward of {len(self.parts)} parts got {len(self.gates)} gates; pass one (or None) per part")
        names = {n for n, _, _ in self.parts}
        for (part, _, _), gate in zip(self.parts, self.gates, strict=True):
            if gate is not None and (gate not in names or gate == part):
                raise ValueError(f"reward part {part!r} is gated by {gate!r}, which is not another part of the reward list; add it (weight 0 if it should only gate)")
        self.name = "+".join(f"{w:g}*{n}" + (f"*{g}" if g else "") for (n, w, _), g in zip(self.parts, self.gates, strict=True))
        self.last_means: dict[str, float] = {}

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        values = [reward(images, prompts).float().cpu() for _, _, reward in self.parts]
        by_name: dict[str, torch.Tensor] = {}
        for (name, _, _), value in zip(self.parts, values, strict=True):
            by_name.setdefault(name, value)
            self.last_means[name] = float(by_name[name].mean()) if len(value) else float("nan")
        total = torch.zeros(len(images), dtype=torch.float32)
        for (_, weight, _), value, gate in zip(self.parts, values, self.gates, strict=True):
            total += weight * value * (by_name[gate] if gate else 1.0)
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

        return RemoteReward(
            spec.address, timeout_s=spec.timeout_s, retries=spec.retries, on_failure=spec.on_failure, encoding=spec.encoding, tls_root_cert=spec.tls_root_cert
        )
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
    return WeightedReward(parts, [s.gate for s in specs])
