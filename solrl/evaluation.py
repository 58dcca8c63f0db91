"""A run's evaluation: the prompts it trains and evaluates on, one figure to judge it by, the
report that compares the trained policy with the base, and the before/after sample grid.

Shapes runs report GenEval-style strict accuracy, caption score and the size preference, each
with its standard error (solrl.toy.evaluate), and for the base model the best-of-m preference;
runs on any other reward report the mean reward of n fixed seeds per eval prompt. Every result
names its headline figure under "metric", so reports and logs read the same either way.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from solrl.config import RunConfig
from solrl.models.base import Sampleable

REWARD_BATCH = 64  # images scored at a time by a non-shapes reward


def read_prompt_file(path: str) -> list[str]:
    """Prompts of a text file, one per line; blank lines and '#' comments skipped."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"prompt file {path!r} does not exist; pass a text file with one prompt per line")
    prompts = [line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"prompt file {path!r} holds no prompts")
    return prompts


def load_run_prompts(config: RunConfig, name: str) -> list[str]:
    """The prompts `name` stands for in this run: shapes captions (validated) or a plain file."""
    if config.shapes_captions:
        from solrl.toy.captions import load_prompts

        return load_prompts(name)
    return read_prompt_file(name)


def eval_plan(config: RunConfig, base: bool = False) -> list[tuple[str, int]]:
    """(prompt, seed) of every image the run's eval samples: eval.n fixed seeds per eval prompt, and
    for the base model of a shapes run eval.best_of of them (its first eval.n being the same)."""
    from solrl.toy.evaluate import eval_pairs

    ev = config.eval
    best_of = ev.best_of if base and config.shapes_captions else 0
    return eval_pairs(load_run_prompts(config, ev.prompts), ev.n, ev.seed, best_of)


def measure_run(config: RunConfig, model: Sampleable, pairs: Sequence[tuple[str, int]], reward=None) -> dict[str, np.ndarray]:
    """Per-image measures of `model` (a merged inference copy) on any slice of the eval plan:
    shapes runs the detector's verdicts, other runs `reward` (built from the config if omitted)."""
    from solrl.toy.evaluate import generate, measure

    sampling = config.eval.sampling
    if config.shapes_captions:
        return measure(model, pairs, sampling)
    if reward is None:
        from solrl.rewards.registry import build_reward

        reward = build_reward(config.reward)
    values, seconds = [], 0.0
    for start in range(0, len(pairs), REWARD_BATCH):
        chunk = pairs[start : start + REWARD_BATCH]
        images, spent = generate(model, chunk, sampling, REWARD_BATCH)
        seconds += spent
        values.append(reward(images, [p for p, _ in chunk]).double().cpu().numpy())
    return {"reward": np.concatenate(values), "seconds": np.array([seconds])}


def summarize_run(config: RunConfig, pairs: Sequence[tuple[str, int]], measures: dict[str, np.ndarray], base: bool = False) -> dict:
    """The eval's figures from the measures of every planned image (in plan order)."""
    from solrl.toy.evaluate import stratified_mean, summarize

    ev = config.eval
    info = {"seed": ev.seed, "steps": ev.sampling.steps, "solver": ev.sampling.solver}
    if config.shapes_captions:
        return {"metric": "accuracy", **summarize(pairs, measures, ev.n, ev.best_of if base else 0), **info}
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
        **info,
    }


def merge_measures(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Measures of consecutive slices of a plan, joined in plan order."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def eval_copy(policy, config: RunConfig, adapter_state: dict | None = None) -> Sampleable:
    """A merged copy of `policy`'s base in eval precision, plus `adapter_state` when given."""
    model = policy.inference_copy(config.eval.precision, adapter=None, compute_dtype=config.rollout.compute_dtype)
    if adapter_state is not None:
        model.update_adapter(adapter_state)
    return model


def evaluate_run(config: RunConfig, model: Sampleable, reward=None, base: bool = False) -> dict:
    """The run's eval of `model` (a merged inference copy), per config.eval; the `base` model's
    shapes eval also draws eval.best_of seeds per caption for the best-of preference."""
    pairs = eval_plan(config, base)
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


def run_report(base: dict, final: dict, final_policy: dict, **extra) -> dict:
    """eval.json: the base eval, the trained EMA and raw policy evals, the headline improvement
    and, on shapes runs, the share of the base's best-of-m preference gap each closes."""
    report = {
        "base_eval": base,
        "final_eval": final,
        "final_eval_policy": final_policy,
        "improvement": round(headline(final) - headline(base), 4),
    }
    if "best_of" in base:
        from solrl.toy.evaluate import accuracy_change, gap_closed

        report["preference_gap_closed"] = gap_closed(base, final)
        report["preference_gap_closed_policy"] = gap_closed(base, final_policy)
        report["accuracy_change"], report["accuracy_change_se"] = accuracy_change(base, final)
    return report | extra


def run_grid(config: RunConfig, model: Sampleable):
    """The run's sample grid of its eval prompts (PIL image), framed pass / fail on shapes runs."""
    from solrl.toy.grid import grid_for

    ev = config.eval
    return grid_for(model, load_run_prompts(config, ev.prompts), ev.sampling, ev.seed, ev.grid_rows, framed=config.shapes_captions)


def write_grid(path: pathlib.Path, before, after) -> None:
    """grid.png: the base model's and the trained policy's grids side by side."""
    from solrl.toy.grid import before_after

    before_after(before, after).save(path)
