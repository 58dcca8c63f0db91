"""Which images an evaluation draws and drawing them: fixed seeds per prompt, the same for every
model evaluated with the same eval seed, so before/after comparisons are paired."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from solrl.models.base import Sampleable
from solrl.sampling import SamplingConfig, derive_seeds, sample

Pairs = Sequence[tuple[str, int]]

EVAL_ITERATION = -1  # the iteration slot of derive_seeds reserved for evaluation seeds


def eval_seeds(seed: int, n_prompts: int, n: int) -> list[list[int]]:
    """The n seeds of each prompt: the same for every model evaluated with this seed (and the
    first n of a longer list, so a best-of-m draw contains the eval's own seeds)."""
    return [derive_seeds(seed, EVAL_ITERATION, i, n) for i in range(n_prompts)]


def eval_pairs(prompts: Sequence[str], n: int, seed: int, best_of: int = 0) -> list[tuple[str, int]]:
    """(caption, seed) of every image an eval samples: max(n, best_of) seeds per caption."""
    return [(p, s) for p, seeds in zip(prompts, eval_seeds(seed, len(prompts), max(n, best_of))) for s in seeds]


def generate(model: Sampleable, pairs: Pairs, sampling: SamplingConfig, batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """Decoded images for (caption, seed) pairs, and the seconds spent sampling."""
    images, seconds = [], 0.0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        begin = time.perf_counter()
        with torch.no_grad():
            cond = model.encode_prompts([p for p, _ in chunk])
            images.append(model.decode(sample(model, cond, [s for _, s in chunk], sampling)))
        seconds += time.perf_counter() - begin
    return torch.cat(images), seconds
