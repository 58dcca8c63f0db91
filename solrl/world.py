"""A run's world: what its prompts are, how they group into strata, how a model is evaluated on
them, and what a report compares. The run, the engines and the config ask the world instead of
special-casing a reward.

Two worlds ship: ShapesWorld (solrl/toy_app/world.py: the built-in captions, GenEval-style accuracy
by the detector, the size preference and the base model's best-of headroom) and PromptFileWorld
(real models: prompt files, the mean reward of fixed seeds per prompt). A world is chosen by the
run's reward: each reward kind names the world whose prompts it can read.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from solrl.models.base import Sampleable
from solrl.sampling import SamplingConfig
from solrl.sampling.eval_images import Pairs, generate
from solrl.stats import stratified_mean

REWARD_BATCH = 64  # images scored at a time


class World(Protocol):
    name: str
    best_of: bool  # whether the base eval also draws best-of seeds (the headroom selection gives)
    framed_grid: bool  # whether grid.png frames each image pass / fail

    def check(self, config) -> None:
        """Raise ValueError (naming the field and the fix) for settings of the RunConfig this
        world cannot run. (Untyped: the config module asks the world, never the other way.)"""

    def load_prompts(self, name: str) -> list[str]:
        """The prompts `name` stands for (a shipped set or a file), validated."""

    def strata(self, prompts: Sequence[str]) -> list[str]:
        """One label per prompt for prompt_sampling=by_task."""

    def measure(self, model: Sampleable, pairs: Pairs, sampling: SamplingConfig, reward) -> dict[str, np.ndarray]:
        """Per-image measures of `model` on any slice of the eval plan (a cluster shares it out)."""

    def summarize(self, pairs: Pairs, measures: dict[str, np.ndarray], n: int, best_of: int) -> dict:
        """The eval's figures from the measures of every planned image; 'metric' names the headline."""

    def compare(self, base: dict, final: dict, final_policy: dict) -> dict:
        """Report fields beyond the headline improvement ({} when there are none)."""


def read_prompt_file(path: str) -> list[str]:
    """Prompts of a text file, one per line; blank lines and '#' comments skipped."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"prompt file {path!r} does not exist; pass a text file with one prompt per line")
    prompts = [line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"prompt file {path!r} holds no prompts")
    return prompts


class PromptFileWorld:
    """Any model and reward: prompts from files, judged by the run's reward."""

    name, best_of, framed_grid = "prompts", False, False

    def check(self, config) -> None:
        for field, value in (("prompts", config.prompts), ("eval.prompts", config.eval.prompts)):
            if value in ("train", "eval"):
                raise ValueError(
                    f"{field}={value!r} names the shipped shapes captions, which only the shapes reward reads; "
                    f"set {field} to a text file of prompts (one per line)"
                )
        if config.keeps_best and config.eval.validation in ("train", "eval", "validation"):
            raise ValueError(
                f"eval.validation={config.eval.validation!r} names shipped shapes captions, which only the shapes reward reads; set "
                "eval.validation to a text file of prompts disjoint from eval.prompts, or train.keep_best=false (lora/ then holds the last adapters)"
            )
        if config.prompt_sampling == "by_task":
            raise ValueError("prompt_sampling='by_task' needs shapes captions (their task); use 'uniform'")

    def load_prompts(self, name: str) -> list[str]:
        return read_prompt_file(name)

    def strata(self, prompts: Sequence[str]) -> list[str]:
        raise ValueError("prompt files carry no task labels; use prompt_sampling='uniform'")

    def measure(self, model: Sampleable, pairs: Pairs, sampling: SamplingConfig, reward) -> dict[str, np.ndarray]:
        values, seconds = [], 0.0
        for start in range(0, len(pairs), REWARD_BATCH):
            chunk = pairs[start : start + REWARD_BATCH]
            images, spent = generate(model, chunk, sampling, REWARD_BATCH)
            seconds += spent
            values.append(reward(images, [p for p, _ in chunk]).double().cpu().numpy())
        return {"reward": np.concatenate(values), "seconds": np.array([seconds])}

    def summarize(self, pairs: Pairs, measures: dict[str, np.ndarray], n: int, best_of: int) -> dict:
        r = measures["reward"]
        mean, se = stratified_mean(r, [p for p, _ in pairs])
        seconds = float(measures["seconds"].sum())
        return {
            "metric": "reward",
            "reward": round(mean, 6),
            "reward_se": round(se, 6),
            "reward_std": round(float(r.std()), 6),
            "images": len(pairs),
            "images_per_s": round(len(pairs) / seconds, 2) if seconds else None,
        }

    def compare(self, base: dict, final: dict, final_policy: dict) -> dict:
        return {}


def world_named(name: str) -> World:
    if name == "prompts":
        return PromptFileWorld()
    if name == "shapes":
        from solrl.toy_app.world import ShapesWorld

        return ShapesWorld()
    raise ValueError(f"world {name!r} is unknown; use 'shapes' or 'prompts'")
