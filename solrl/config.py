"""The whole run configuration: typed pydantic models, loaded from YAML with `--set a.b=value`
overrides. Every error names the field, the value and what to do instead."""

from __future__ import annotations

import pathlib
from importlib import resources
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from solrl.cost import CostConfig
from solrl.layout import ClusterConfig
from solrl.model_dims import MODELS
from solrl.models.base import LoraSpec, Precision
from solrl.objectives.nft import NFTConfig
from solrl.optim import OptimConfig
from solrl.precision_control import PrecisionControl
from solrl.quant.linear import QuantRecipe
from solrl.rewards.registry import RewardSpec, ShapesRewardSpec
from solrl.sampling.loop import SamplingConfig
from solrl.selection import Mode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _describe(text: str, **constraints) -> Any:
    return Field(description=text, **constraints)


class ModelConfig(_Strict):
    """The policy model and its LoRA adapters."""

    kind: Literal["shapes", "sd3", "flux", "sana"] = _describe("Model family: the built-in shapes model or a diffusers pipeline.", default="shapes")
    path: str | None = _describe("shapes: None = the weights shipped in the package; sd3 / flux / sana: a local diffusers folder (no hub downloads).", default=None)
    lora: LoraSpec = Field(default_factory=LoraSpec, description="The LoRA adapters trained on the model.")
    device: str = _describe("'auto' = the first CUDA device if any, else cpu.", default="auto")
    resolution: int | None = _describe("Diffusers pipelines: image side in pixels (None: the model's default).", default=None, ge=8)
    max_sequence_length: int | None = _describe("Diffusers pipelines: text tokens (None: the pipeline's default).", default=None, ge=1)
    guidance: float = _describe("FLUX.1-dev's distilled-guidance input (not CFG).", default=3.5, ge=0)
    complex_human_instruction: bool = _describe("SANA: prepend the pipeline's default instruction.", default=True)
    cudnn_attention: bool = _describe(
        "Let torch's attention use cuDNN's fused kernels in every process that builds the model. Under torch 2.11+cu130 on an "
        "H200 their backward failed on FLUX.1's shapes (an illegal memory access; RESULTS.md 2026-12-04): false there.",
        default=True,
    )

    @model_validator(mode="after")
    def _path_for_pipelines(self) -> ModelConfig:
        if self.kind != "shapes" and not self.path:
            raise ValueError(f"model.kind={self.kind!r} needs model.path: a local diffusers folder of the checkpoint (no hub downloads)")
        return self


class RolloutConfig(_Strict):
    """How candidates are explored and the selected ones regenerated."""

    mode: Literal["sol", "direct"] = _describe(
        "sol: explore, select, regenerate the selected seeds. direct: train on the explored samples themselves "
        "(plain DiffusionNFT when selection.k = candidates; the paper's baselines; --local only).",
        default="sol",
    )
    prompts_per_iteration: int = _describe("Prompt groups explored per iteration.", default=48, ge=1)
    candidates: int = _describe("N: seeds explored per prompt.", default=96, ge=1)
    explore: SamplingConfig = Field(default_factory=lambda: SamplingConfig(steps=6), description="Sampler of the low-precision explore pass.")
    regenerate: SamplingConfig = Field(default_factory=lambda: SamplingConfig(steps=10), description="Sampler of the regeneration (and training times).")
    explore_precision: Precision = _describe("Precision of the explore copy of the policy.", default="nvfp4")
    regenerate_precision: Precision = _describe("Precision of the regeneration copy.", default="bf16")
    compute_dtype: Literal["auto", "fp32", "bf16"] = _describe("Dtype of the samplers' arithmetic ('auto': bf16 on GPU, fp32 on CPU).", default="auto")
    quant: QuantRecipe = Field(default_factory=QuantRecipe, description="What the low-precision copies quantize, in which format, on which backend.")
    precision_control: PrecisionControl | None = _describe(
        "Explore precision chosen online: audit a few random seeds per group against BF16 and move along a ladder "
        "(NVFP4, then FP8 and BF16 at the regeneration's steps) when their rank agreement stays below a floor, back when it recovers (docs/method.md). "
        "None: explore_precision throughout.",
        default=None,
    )
    max_policy_lag: int = _describe(
        "Policy versions explore may run ahead of training: 0 is synchronous; 1 explores the next iteration while the "
        "learners train this one (the distributed run; --local is always synchronous). Older records are dropped and counted.",
        default=0,
        ge=0,
    )


class SelectionConfig(_Strict):
    """Which explored seeds are regenerated and trained on."""

    mode: Mode = _describe("How the k seeds are chosen from a group's proxy rewards.", default="best_worst")
    k: int = _describe("Seeds kept per prompt.", default=24, ge=1)


class TrainConfig(_Strict):
    """The learner: how long, and how each step trains."""

    iterations: int = _describe("Iterations (explore, select, regenerate, one learner step each).", default=100, ge=0)
    max_seconds: float = _describe("Stop starting iterations after this many seconds of training (0: no limit).", default=0, ge=0)
    nft: NFTConfig = Field(default_factory=NFTConfig, description="DiffusionNFT objective.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer.")
    micro_batch: int | None = _describe("Rows per forward/backward (None: the whole batch).", default=None, ge=1)
    updates_per_iteration: int = _describe("Optimizer steps per iteration, each on an equal share of the prompt groups (the method: 1).", default=1, ge=1)
    sharding: Literal["fsdp", "replicate"] = _describe(
        "How several learner ranks hold the transformer: 'fsdp' shards its weights over them (FSDP2, least memory); 'replicate' "
        "keeps a whole copy on each and adds the LoRA gradients over ranks, faster where the copy fits (on an H200 FSDP2's "
        "per-block host work nearly doubled an SD3.5-L step: docs/cluster.md).",
        default="fsdp",
    )
    keep_best: bool = _describe(
        "With periodic evals (eval.every) and eval.validation: lora/ holds the adapters of the eval with the best mean reward on "
        "the validation prompts (the final eval reports that one) and lora/last/ the last; off: lora/ holds the last.",
        default=True,
    )


class EvalConfig(_Strict):
    """The held-out evaluation before, during and after training."""

    prompts: str = _describe("'train', 'eval' (shipped shapes captions) or a file of prompts.", default="eval")
    n: int = _describe("Images per prompt.", default=8, ge=1)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(steps=10, solver="euler"), description="Sampler of eval images.")
    precision: Precision = _describe("Precision of the evaluated model.", default="fp32")
    seed: int = _describe("Seed of the eval images (the same before and after).", default=1234)
    every: int = _describe("Also evaluate the EMA every this many iterations (0: start and end only).", default=0, ge=0)
    validation: str = _describe(
        "Prompts the periodic evals also measure, to choose the adapter train.keep_best keeps: 'validation' (shipped shapes "
        "captions: training captions that are not eval captions), a file of prompts disjoint from eval.prompts, or '' (none).",
        default="validation",
    )
    best_of: int = _describe("Shapes runs: seeds per caption of the base model's best-of preference (0: off).", default=32, ge=0)
    grid_rows: int = _describe("Captions in the run's before/after grid.png (0: no grid).", default=8, ge=0)


class RunConfig(_Strict):
    """One Sol-RL run."""

    seed: int = _describe("Seed of prompt order, explore seeds and training noise.", default=0)
    prompts: str = _describe("Training prompts: 'train' (shipped shapes captions) or a file of prompts.", default="train")
    prompt_sampling: Literal["uniform", "by_task"] = _describe(
        "uniform: every prompt equally often. by_task: every task equally often (shapes captions).", default="uniform"
    )
    reward: list[RewardSpec] = Field(
        default_factory=lambda: [ShapesRewardSpec(name="shapes")],
        description="A reward name, one reward mapping, or a list of them (a weighted sum, parts optionally gated).",
    )
    deterministic: bool = _describe("Bit-reproducible runs: one thread per learner step; the distributed run equals --local.", default=False)
    model: ModelConfig = Field(default_factory=ModelConfig, description=ModelConfig.__doc__)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description=RolloutConfig.__doc__)
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description=SelectionConfig.__doc__)
    train: TrainConfig = Field(default_factory=TrainConfig, description=TrainConfig.__doc__)
    eval: EvalConfig = Field(default_factory=EvalConfig, description=EvalConfig.__doc__)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description=ClusterConfig.__doc__)
    cost: CostConfig = Field(default_factory=CostConfig, description=CostConfig.__doc__)

    @field_validator("reward", mode="before")
    @classmethod
    def _reward_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"name": value}]
        return [value] if isinstance(value, dict) else value

    @property
    def world(self) -> str:
        """The world (solrl.world) the run's reward reads prompts of."""
        worlds = {r.world for r in self.reward}
        return next((w for w in sorted(worlds) if w != "prompts"), "prompts")

    @property
    def keeps_best(self) -> bool:
        """Whether the run keeps its best periodic eval's adapters (train.keep_best, which needs
        eval.every and eval.validation)."""
        return self.train.keep_best and self.eval.every > 0 and bool(self.eval.validation)

    @model_validator(mode="after")
    def _k_fits_n(self) -> RunConfig:
        if self.selection.k > self.rollout.candidates:
            raise ValueError(
                f"selection.k={self.selection.k} exceeds rollout.candidates={self.rollout.candidates}; "
                f"keep at most as many seeds as are explored"
            )
        if self.train.updates_per_iteration > self.rollout.prompts_per_iteration:
            raise ValueError(
                f"train.updates_per_iteration={self.train.updates_per_iteration} exceeds "
                f"rollout.prompts_per_iteration={self.rollout.prompts_per_iteration}; each update needs a whole prompt group"
            )
        control = self.rollout.precision_control
        if control is not None and self.rollout.mode != "sol":
            raise ValueError("rollout.precision_control audits previews against their regenerations; it needs rollout.mode='sol'")
        if control is not None:
            control = self.rollout.precision_control = control.at_regen_steps(self.rollout.regenerate.steps)
            control.check(self.rollout.explore_precision, get_args(Precision))
            if control.in_batch and control.audit > self.selection.k:
                raise ValueError(
                    f"rollout.precision_control.audit={control.audit} exceeds selection.k={self.selection.k} with in_batch: the audit "
                    "seeds take training slots; lower audit to at most k, or set in_batch: false"
                )
        if self.cluster.explore_split > self.rollout.candidates:
            raise ValueError(
                f"cluster.explore_split={self.cluster.explore_split} exceeds rollout.candidates={self.rollout.candidates}; "
                "share a group's seeds over at most that many explore tasks, or 0 to size them from the pool"
            )
        if not self.reward:
            raise ValueError("reward is empty; name at least one reward, e.g. reward: shapes")
        names = [r.name for r in self.reward]
        for r in self.reward:
            if r.gate is not None and (r.gate not in names or r.gate == r.name):
                raise ValueError(
                    f"reward {r.name!r} has gate={r.gate!r}, which is not another part of the reward list {names}; "
                    f"add {{name: {r.gate}, weight: 0}} to gate by it without paying for it"
                )
        self._stand_in_fits()
        return self

    def _stand_in_fits(self) -> None:
        stand_in = self.cluster.stand_in
        if stand_in is None:
            return
        dims = MODELS[stand_in.model]
        if self.model.kind != dims.kind:
            raise ValueError(
                f"cluster.stand_in.model={stand_in.model!r} carries the payloads of model.kind={dims.kind!r}, but model.kind={self.model.kind!r}; "
                f"start from configs/{stand_in.model}.yaml"
            )
        dims.latent_shape(self.model.resolution)
        dims.adapted(self.model.lora.target_modules)


class ConfigError(ValueError):
    """A bad configuration; the message names the field, the value and the fix."""


def _explain(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        hint = {"extra_forbidden": "remove it or check its spelling", "missing": "add it"}.get(err["type"], "fix the value")
        lines.append(f"  {field}{shown}: {err['msg']} ({hint})")
    return ConfigError(f"invalid configuration from {source}:\n" + "\n".join(lines))


def _parse_value(text: str, assignment: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError as exc:
        where = f" (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})" if getattr(exc, "problem_mark", None) else ""
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML{where}: {getattr(exc, 'problem', exc)}; quote it or fix its brackets") from None


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` (value parsed as YAML) to a nested dict, in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set train.iterations=20")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is a value, not a section")
    node[parts[-1]] = _parse_value(text, assignment)


def shipped_config(name: str) -> pathlib.Path:
    """Path of a config shipped with solrl (e.g. 'shapes')."""
    return pathlib.Path(str(resources.files("solrl").joinpath("configs", f"{name}.yaml")))


def load_config(path: str | pathlib.Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (default: the shipped shapes.yaml), apply overrides, validate."""
    path = pathlib.Path(path) if path is not None else shipped_config("shapes")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass a YAML file or omit it for the shapes run")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML at{where}: {getattr(exc, 'problem', exc)}; fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    for assignment in overrides or []:
        apply_override(data, assignment)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, str(path) + (" with --set " + " ".join(overrides) if overrides else "")) from None


def dump_config(config: RunConfig) -> str:
    """The fully resolved configuration as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
