"""GenEval-style evaluation on the shapes world: n images per caption from fixed seeds, checked
by the shapes reward. Overall figures are the mean over the six tasks, as GenEval reports them."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from solrl.models.base import Sampleable
from solrl.rewards.shapes import ShapesReward
from solrl.sampling import SamplingConfig, derive_seeds, sample
from solrl.toy.captions import TASKS, parse_caption

EVAL_ITERATION = -1  # the iteration slot of derive_seeds reserved for evaluation seeds


def eval_seeds(seed: int, n_prompts: int, n: int) -> list[list[int]]:
    """The n seeds of each prompt: the same for every model evaluated with this seed."""
    return [derive_seeds(seed, EVAL_ITERATION, i, n) for i in range(n_prompts)]


def evaluate(
    model: Sampleable,
    prompts: Sequence[str],
    n: int = 8,
    sampling: SamplingConfig | None = None,
    seed: int = 1234,
    batch_size: int = 256,
) -> dict:
    """accuracy (strict), score (mean), per_task accuracy and score, images_per_s."""
    sampling = sampling or SamplingConfig(steps=10, solver="euler")
    reward = ShapesReward()
    pairs = [(p, s) for p, seeds in zip(prompts, eval_seeds(seed, len(prompts), n)) for s in seeds]
    scores, passed, seconds = [], [], 0.0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        captions = [p for p, _ in chunk]
        begin = time.perf_counter()
        with torch.no_grad():
            cond = model.encode_prompts(captions)
            images = model.decode(sample(model, cond, [s for _, s in chunk], sampling))
        seconds += time.perf_counter() - begin
        sc, ok = reward.evaluate(images, captions)
        scores.append(sc)
        passed.append(ok)
    score, ok = torch.cat(scores), torch.cat(passed).float()
    tasks = [parse_caption(p).task for p, _ in pairs]
    per_task, per_task_score = {}, {}
    for task in TASKS:
        idx = [i for i, t in enumerate(tasks) if t == task]
        if idx:
            per_task[task] = round(float(ok[idx].mean()), 4)
            per_task_score[task] = round(float(score[idx].mean()), 4)
    return {
        "accuracy": round(sum(per_task.values()) / len(per_task), 4),
        "score": round(sum(per_task_score.values()) / len(per_task_score), 4),
        "per_task": per_task,
        "per_task_score": per_task_score,
        "images": len(pairs),
        "images_per_s": round(len(pairs) / seconds, 1) if seconds else None,
        "seed": seed,
        "steps": sampling.steps,
        "solver": sampling.solver,
    }
