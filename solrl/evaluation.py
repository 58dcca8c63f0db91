"""A run's evaluation: the prompts it trains and evaluates on, one figure to judge it by, the
report that compares the trained policy with the base, and the before/after sample grid.

What the figures are is the run's world's (solrl.world): shapes runs report GenEval-style strict
accuracy, caption score and the size preference with standard errors, and the base model's
best-of-m preference; prompt-file runs the mean reward of n fixed seeds per eval prompt. Every
result names its headline figure under "metric", so reports and logs read the same either way.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from solrl.config import RunConfig
from solrl.models.base import Sampleable
from solrl.runs import PromptOrder
from solrl.sampling.eval_images import eval_pairs
from solrl.world import World, world_named


def world_of(config: RunConfig) -> World:
    return world_named(config.world)


def load_run_prompts(config: RunConfig, name: str) -> list[str]:
    """The prompts `name` stands for in this run's world."""
    return world_of(config).load_prompts(name)


def prompt_order(config: RunConfig, prompts: Sequence[str]) -> PromptOrder:
    """The run's prompt order (task-balanced by the world's strata when prompt_sampling is by_task)."""
    strata = world_of(config).strata(prompts) if config.prompt_sampling == "by_task" else None
    return PromptOrder(len(prompts), config.seed, strata)


def eval_plan(config: RunConfig, base: bool = False, validation: bool = False) -> list[tuple[str, int]]:
    """(prompt, seed) of every image the run's eval samples: eval.n fixed seeds per eval prompt, and
    for the base model of a world with a best-of figure eval.best_of of them (its first eval.n the
    same); with `validation`, of the eval.validation prompts instead (validation_prompts)."""
    ev, world = config.eval, world_of(config)
    best_of = ev.best_of if base and world.best_of else 0
    prompts = validation_prompts(config) if validation else world.load_prompts(ev.prompts)
    return eval_pairs(prompts, ev.n, ev.seed, best_of)


def validation_prompts(config: RunConfig) -> list[str]:
    """eval.validation's prompts, which must share none with eval.prompts: the adapter
    train.keep_best keeps is chosen on them, and the final eval reports it on the others."""
    world, ev = world_of(config), config.eval
    prompts = world.load_prompts(ev.validation)
    shared = sorted(set(prompts) & set(world.load_prompts(ev.prompts)))
    if shared:
        raise ValueError(
            f"eval.validation={ev.validation!r} shares {len(shared)} prompts with eval.prompts={ev.prompts!r} (e.g. {shared[0]!r}); "
            "train.keep_best would choose on the prompts the final eval reports: pass validation prompts disjoint from them"
        )
    return prompts


def measure_run(config: RunConfig, model: Sampleable, pairs: Sequence[tuple[str, int]], reward=None) -> dict[str, np.ndarray]:
    """Per-image measures of `model` (a merged inference copy) on any slice of the eval plan;
    `reward` (built from the config if omitted) serves worlds judged by the run's reward."""
    if reward is None:
        from solrl.rewards.registry import build_reward

        reward = build_reward(config.reward)
    return world_of(config).measure(model, pairs, config.eval.sampling, reward)


def summarize_run(config: RunConfig, pairs: Sequence[tuple[str, int]], measures: dict[str, np.ndarray], base: bool = False) -> dict:
    """The eval's figures from the measures of every planned image (in plan order)."""
    ev, world = config.eval, world_of(config)
    info = {"seed": ev.seed, "steps": ev.sampling.steps, "solver": ev.sampling.solver}
    return world.summarize(pairs, measures, ev.n, ev.best_of if base and world.best_of else 0) | info


def merge_measures(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Measures of consecutive slices of a plan, joined in plan order."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def eval_copy(policy, config: RunConfig, adapter_state: dict | None = None) -> Sampleable:
    """A merged copy of `policy`'s base in eval precision, plus `adapter_state` when given."""
    model = policy.inference_copy(config.eval.precision, adapter=None, compute_dtype=config.rollout.compute_dtype)
    if adapter_state is not None:
        model.update_adapter(adapter_state)
    return model


def evaluate_run(config: RunConfig, model: Sampleable, reward=None, base: bool = False, validation: bool = False) -> dict:
    """The run's eval of `model` (a merged inference copy), per config.eval; the `base` model's
    shapes eval also draws eval.best_of seeds per caption for the best-of preference. With
    `validation`, on the eval.validation prompts."""
    pairs = eval_plan(config, base, validation)
    return summarize_run(config, pairs, measure_run(config, model, pairs, reward), base)


def headline(result: dict) -> float:
    """The figure a result is judged by (accuracy or mean reward)."""
    return result[result.get("metric", "accuracy")]


def describe(result: dict) -> str:
    """'accuracy 0.207 preference 0.512' / 'reward 0.8123' for logs."""
    text = f"{result.get('metric', 'accuracy')} {headline(result):.4f}"
    if "preference" in result:
        text += f" preference {result['preference']:.4f}"
    if "best_of" in result:
        text += f" (best of {result['best_of']['n']}: {result['best_of']['preference']:.4f})"
    return text


def run_report(config: RunConfig, base: dict, final: dict, final_policy: dict, **extra) -> dict:
    """eval.json: the base eval, the trained EMA and raw policy evals, the headline improvement
    and what the world compares (on shapes runs: the share of the best-of preference gap closed)."""
    report = {
        "base_eval": base,
        "final_eval": final,
        "final_eval_policy": final_policy,
        "improvement": round(headline(final) - headline(base), 4),
    }
    return report | world_of(config).compare(base, final, final_policy) | extra


def run_grid(config: RunConfig, model: Sampleable):
    """The run's sample grid of its eval prompts (PIL image), framed pass / fail on shapes runs."""
    from solrl.toy_app.grid import grid_for

    ev = config.eval
    world = world_of(config)
    return grid_for(model, world.load_prompts(ev.prompts), ev.sampling, ev.seed, ev.grid_rows, framed=world.framed_grid)


def write_grid(path: pathlib.Path, before, after) -> None:
    """grid.png: the base model's and the trained policy's grids side by side."""
    from solrl.toy_app.grid import before_after

    before_after(before, after).save(path)
