"""GenEval-style evaluation on the shapes world: n images per caption from fixed seeds, judged by
the detector (solrl.toy.detector). Reported, each with its standard error over seeds:

- accuracy: the strict pass rate, mean over the six tasks (as GenEval reports it);
- score: the caption score (partial credit), mean over the six tasks;
- preference: the size preference, mean over captions;
- with best_of = m > n: the base model's best-of-m preference, for each caption the highest
  preference among m seeds, averaged over captions: the headroom selection alone gives.

A standard error of a mean over strata (tasks or captions) is sqrt(sum_s var_s / n_s) / S, with
var_s the sample variance within stratum s: the spread a new draw of seeds would give.

The work splits in three so that a cluster can share it out: `eval_pairs` (which images),
`measure` (sample and judge any slice of them, anywhere), `summarize` (the figures).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from solrl.models.base import Sampleable
from solrl.sampling import SamplingConfig
from solrl.sampling.eval_images import eval_pairs, generate
from solrl.stats import stratified_mean
from solrl.toy.captions import TASKS, parse_caption
from solrl.toy.detector import judge

Pairs = Sequence[tuple[str, int]]


def measure(model: Sampleable, pairs: Pairs, sampling: SamplingConfig, batch_size: int = 256, reward=None) -> dict[str, np.ndarray]:
    """Per image: caption score, strict pass (0 / 1) and size preference, and with `reward` (a run's
    reward callable) that reward; and sampling seconds."""
    images, seconds = generate(model, pairs, sampling, batch_size)
    prompts = [p for p, _ in pairs]
    score, passed, size = judge(images, prompts)
    measures = {"score": score.double().numpy(), "passed": passed.double().numpy(), "preference": size.double().numpy(), "seconds": np.array([seconds])}
    return measures | ({"reward": reward(images, prompts).double().numpy()} if reward is not None else {})


def summarize(pairs: Pairs, measures: dict[str, np.ndarray], n: int, best_of: int = 0) -> dict:
    """The figures of `measure`'s output over `eval_pairs(prompts, n, seed, best_of)`."""
    draws = max(n, best_of)
    first = np.arange(len(pairs)) % draws < n  # each caption's own n eval seeds come first
    captions = [p for (p, _), keep in zip(pairs, first) if keep]
    tasks = [parse_caption(p).task for p in captions]
    score, passed, preference = (measures[k][first] for k in ("score", "passed", "preference"))
    figures: dict = {}
    for name, values, strata in (("accuracy", passed, tasks), ("score", score, tasks), ("preference", preference, captions)):
        mean, se = stratified_mean(values, strata)
        figures |= {name: round(mean, 4), f"{name}_se": round(se, 4)}
    per = {t: [i for i, x in enumerate(tasks) if x == t] for t in TASKS if t in tasks}
    if "reward" in measures:  # the run's own reward, what train.keep_best chooses by
        mean, se = stratified_mean(measures["reward"][first], tasks)
        figures |= {"reward": round(mean, 4), "reward_se": round(se, 4)}
    figures["per_task"] = {t: round(float(passed[idx].mean()), 4) for t, idx in per.items()}
    figures["per_task_score"] = {t: round(float(score[idx].mean()), 4) for t, idx in per.items()}
    # each caption's pass rate, so two evals on the same plan can be compared caption by caption
    figures["per_caption"] = {p: round(float(passed[[i for i, c in enumerate(captions) if c == p]].mean()), 4) for p in dict.fromkeys(captions)}
    seconds = float(measures["seconds"].sum())
    figures |= {"images": len(pairs), "images_per_s": round(len(pairs) / seconds, 1) if seconds else None, "n": n}
    if draws > n:
        best = measures["preference"].reshape(-1, draws).max(axis=1)
        figures["best_of"] = {"n": draws, "preference": round(float(best.mean()), 4), "preference_se": round(float(best.std(ddof=1) / np.sqrt(len(best))), 4)}
    return figures


def evaluate(
    model: Sampleable,
    prompts: Sequence[str],
    n: int = 8,
    sampling: SamplingConfig | None = None,
    seed: int = 1234,
    batch_size: int = 256,
    best_of: int = 0,
) -> dict:
    """accuracy, score and preference (each with _se), per-task accuracy and score, images_per_s,
    and best_of (preference and its s.e. over captions) when best_of > n."""
    sampling = sampling or SamplingConfig(steps=10, solver="euler")
    pairs = eval_pairs(prompts, n, seed, best_of)
    return summarize(pairs, measure(model, pairs, sampling, batch_size), n, best_of) | {"seed": seed, "steps": sampling.steps, "solver": sampling.solver}


def gap_closed(base: dict, final: dict) -> float | None:
    """Share of the gap between the base's mean preference and its best-of-m preference that
    `final` closes (None without a best-of figure)."""
    best = base.get("best_of")
    if not best or best["preference"] <= base["preference"]:
        return None
    return round((final["preference"] - base["preference"]) / (best["preference"] - base["preference"]), 4)


def accuracy_change(base: dict, final: dict) -> tuple[float, float]:
    """final - base strict accuracy, and its paired standard error: both evals draw the same seeds
    for the same captions, so the change is the task-stratified mean of per-caption differences."""
    captions = list(base["per_caption"])
    if list(final["per_caption"]) != captions:
        raise ValueError("the two evals cover different captions; compare evals of the same eval plan")
    diff = np.array([final["per_caption"][c] - base["per_caption"][c] for c in captions])
    mean, se = stratified_mean(diff, [parse_caption(c).task for c in captions])
    return round(mean, 4), round(se, 4)
