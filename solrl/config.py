"""The whole run configuration: typed pydantic models, loaded from YAML with `--set a.b=value`
overrides. Every error names the field, the value and what to do instead."""

from __future__ import annotations

import pathlib
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from solrl.faults import parse_fault
from solrl.models.base import LoraSpec, Precision
from solrl.objectives.nft import NFTConfig
from solrl.quant.linear import QuantRecipe
from solrl.rewards.registry import RewardSpec
from solrl.sampling.loop import SamplingConfig
from solrl.selection import Mode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    kind: Literal["shapes", "sd3", "flux", "sana"] = "shapes"
    # shapes: None = the weights shipped in the package. sd3 / flux / sana: a local diffusers folder.
    path: str | None = None
    lora: LoraSpec = Field(default_factory=LoraSpec)
    device: str = "auto"  # 'auto' = the first CUDA device if any, else cpu
    # Diffusers pipelines only (ignored by shapes):
    resolution: int | None = Field(default=None, ge=8)  # image side in pixels (None: the model's default)
    max_sequence_length: int | None = Field(default=None, ge=1)  # text tokens (None: the pipeline's default)
    guidance: float = Field(default=3.5, ge=0)  # FLUX.1-dev's distilled-guidance input (not CFG)
    complex_human_instruction: bool = True  # SANA: prepend the pipeline's default instruction

    @model_validator(mode="after")
    def _path_for_pipelines(self) -> ModelConfig:
        if self.kind != "shapes" and not self.path:
            raise ValueError(f"model.kind={self.kind!r} needs model.path: a local diffusers folder of the checkpoint (no hub downloads)")
        return self


class RolloutConfig(_Strict):
    # sol: explore -> select -> regenerate the selected seeds. direct: train on the explored
    # samples themselves (plain DiffusionNFT when k = candidates; the paper's baselines).
    mode: Literal["sol", "direct"] = "sol"
    prompts_per_iteration: int = Field(default=48, ge=1)
    candidates: int = Field(default=96, ge=1)  # N seeds explored per prompt
    explore: SamplingConfig = Field(default_factory=lambda: SamplingConfig(steps=6))
    regenerate: SamplingConfig = Field(default_factory=lambda: SamplingConfig(steps=10))
    explore_precision: Precision = "nvfp4"
    regenerate_precision: Precision = "bf16"
    compute_dtype: Literal["auto", "fp32", "bf16"] = "auto"
    quant: QuantRecipe = Field(default_factory=QuantRecipe)


class SelectionConfig(_Strict):
    mode: Mode = "best_worst"
    k: int = Field(default=24, ge=1)  # kept per prompt


class OptimConfig(_Strict):
    """AdamW settings; defaults are docs/method.md's."""

    lr: float = Field(default=3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=1e-4, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)


class TrainConfig(_Strict):
    iterations: int = Field(default=100, ge=0)
    max_seconds: float = Field(default=0, ge=0)  # stop starting iterations after this (0: no limit)
    nft: NFTConfig = Field(default_factory=NFTConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    micro_batch: int | None = Field(default=None, ge=1)
    # Optimizer steps per iteration, each on an equal share of the prompt groups (docs/method.md: 1).
    updates_per_iteration: int = Field(default=1, ge=1)


class EvalConfig(_Strict):
    prompts: str = "eval"  # 'train', 'eval' or a file of captions
    n: int = Field(default=8, ge=1)  # images per prompt
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(steps=10, solver="euler"))
    precision: Precision = "fp32"
    seed: int = 1234
    every: int = Field(default=0, ge=0)  # also evaluate every this many iterations (0: start and end only)
    # shapes runs: the base eval also draws this many seeds per caption for the best-of preference (0: off)
    best_of: int = Field(default=32, ge=0)
    grid_rows: int = Field(default=8, ge=0)  # captions in the run's before/after grid.png (0: no grid)


class ClusterConfig(_Strict):
    """How the distributed run is laid out (ignored by --local)."""

    rollout_workers: int = Field(default=2, ge=1)
    regen_workers: int = Field(default=1, ge=1)
    # 0: every sampler scores its own images. N > 0: the reward lives only in a pool of N
    # RewardWorkers, for reward models too big to sit beside every sampler.
    reward_workers: int = Field(default=0, ge=0)
    learner_ranks: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1, gt=0)
    gpus_per_worker: float = Field(default=0, ge=0)
    # How many policy versions explore may run ahead of training (0 = synchronous).
    max_policy_lag: int = Field(default=0, ge=0)
    groups_per_task: int = Field(default=1, ge=1)  # prompt groups a rollout worker takes at a time
    checkpoint_every: int = Field(default=1, ge=0)  # iterations between checkpoints (0: only at the end)
    max_restarts: int = Field(default=10, ge=0)  # worker replacements before the run gives up
    # Fault injection for tests (solrl/faults.py): "WORKER:POINT:K" kills WORKER at POINT of its K-th task.
    faults: list[str] = Field(default_factory=list)

    @field_validator("faults")
    @classmethod
    def _faults(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_fault(spec)
        return value

    @property
    def workers(self) -> int:
        """Actors the run starts: samplers of both pools, reward workers and learner ranks."""
        return self.rollout_workers + self.regen_workers + self.reward_workers + self.learner_ranks

    def resources(self) -> dict[str, float]:
        """Logical CPUs and GPUs the run's actors reserve."""
        return {"CPU": self.cpus_per_worker * self.workers, "GPU": self.gpus_per_worker * self.workers}


class RunConfig(_Strict):
    seed: int = 0
    prompts: str = "train"
    # uniform: every prompt equally often. by_task: every task equally often (shapes captions).
    prompt_sampling: Literal["uniform", "by_task"] = "uniform"
    # A reward name, one {name, path, weight} mapping, or a list of them (a weighted sum).
    reward: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="shapes")])
    deterministic: bool = False
    model: ModelConfig = Field(default_factory=ModelConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @field_validator("reward", mode="before")
    @classmethod
    def _reward_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"name": value}]
        return [value] if isinstance(value, dict) else value

    @property
    def shapes_captions(self) -> bool:
        """Whether prompts are shapes-world captions (the shapes reward parses them)."""
        return any(r.name.startswith("shapes") for r in self.reward)

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
        if not self.reward:
            raise ValueError("reward is empty; name at least one reward, e.g. reward: shapes")
        names = [r.name for r in self.reward]
        for r in self.reward:
            if r.gate is not None and (r.gate not in names or r.gate == r.name):
                raise ValueError(
                    f"reward {r.name!r} has gate={r.gate!r}, which is not another part of the reward list {names}; "
                    f"add {{name: {r.gate}, weight: 0}} to gate by it without paying for it"
                )
        if not self.shapes_captions:
            for field, value in (("prompts", self.prompts), ("eval.prompts", self.eval.prompts)):
                if value in ("train", "eval"):
                    raise ValueError(
                        f"{field}={value!r} names the shipped shapes captions, which only the shapes reward reads; "
                        f"set {field} to a text file of prompts (one per line)"
                    )
            if self.prompt_sampling == "by_task":
                raise ValueError("prompt_sampling='by_task' needs shapes captions (their task); use 'uniform'")
        return self


class ConfigError(ValueError):
    """A bad configuration; the message names the field, the value and the fix."""


def _explain(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        hint = "remove it or check its spelling" if err["type"] == "extra_forbidden" else "fix the value"
        lines.append(f"  {field}{shown}: {err['msg']} ({hint})")
    return ConfigError(f"invalid configuration from {source}:\n" + "\n".join(lines))


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


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
    node[parts[-1]] = _parse_value(text)


def shipped_config(name: str) -> pathlib.Path:
    """Path of a config shipped with solrl (e.g. 'shapes')."""
    return pathlib.Path(str(resources.files("solrl").joinpath("configs", f"{name}.yaml")))


def load_config(path: str | pathlib.Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (default: the shipped shapes.yaml), apply overrides, validate."""
    path = pathlib.Path(path) if path is not None else shipped_config("shapes")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass a YAML file or omit it for the shapes run")
    data = yaml.safe_load(path.read_text()) or {}
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
