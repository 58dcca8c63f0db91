"""A run's evaluation: the prompts it trains and evaluates on, and one figure to judge it by.

Shapes runs report GenEval-style strict accuracy (solrl.toy.evaluate); runs on any other reward
report the mean reward of n fixed seeds per eval prompt. Every result names its headline figure
under "metric", so reports and logs read the same either way.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Sequence

import torch

from solrl.config import RunConfig
from solrl.models.base import Sampleable
from solrl.sampling import SamplingConfig, sample


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


def reward_eval(model: Sampleable, reward, prompts: Sequence[str], n: int, sampling: SamplingConfig, seed: int, batch_size: int = 64) -> dict:
    """Mean and spread of `reward` over n fixed seeds per prompt (the same seeds for every model)."""
    from solrl.toy.evaluate import eval_seeds

    pairs = [(p, s) for p, seeds in zip(prompts, eval_seeds(seed, len(prompts), n)) for s in seeds]
    rewards, seconds = [], 0.0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        captions = [p for p, _ in chunk]
        begin = time.perf_counter()
        with torch.no_grad():
            images = model.decode(sample(model, model.encode_prompts(captions), [s for _, s in chunk], sampling))
        seconds += time.perf_counter() - begin
        rewards.append(reward(images, captions).float().cpu())
    r = torch.cat(rewards)
    return {
        "metric": "reward",
        "reward": round(float(r.mean()), 6),
        "reward_std": round(float(r.std(correction=0)), 6),
        "images": len(pairs),
        "images_per_s": round(len(pairs) / seconds, 2) if seconds else None,
        "seed": seed,
        "steps": sampling.steps,
        "solver": sampling.solver,
    }


def evaluate_run(config: RunConfig, model: Sampleable, reward=None) -> dict:
    """The run's eval of `model` (a merged inference copy), per config.eval."""
    ev = config.eval
    prompts = load_run_prompts(config, ev.prompts)
    if config.shapes_captions:
        from solrl.toy.evaluate import evaluate

        return {"metric": "accuracy", **evaluate(model, prompts, ev.n, ev.sampling, ev.seed)}
    if reward is None:
        from solrl.rewards.registry import build_reward

        reward = build_reward(config.reward)
    return reward_eval(model, reward, prompts, ev.n, ev.sampling, ev.seed)


def headline(result: dict) -> float:
    """The figure a result is judged by (accuracy or mean reward)."""
    return result[result.get("metric", "accuracy")]


def describe(result: dict) -> str:
    """'accuracy 0.207' / 'reward 0.8123' for logs."""
    return f"{result.get('metric', 'accuracy')} {headline(result):.4f}"
