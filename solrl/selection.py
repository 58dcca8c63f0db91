"""Which K of a prompt's N candidates get regenerated and trained on: pure functions of a reward
vector and a seed.

Defined behaviour:
- ties are broken by candidate index (the earlier candidate ranks first, in both directions),
  so the result never depends on sort stability or platform;
- NaN and infinite rewards are excluded before selecting, and reported in `excluded`;
- N < K is a configuration error (ValueError); when exclusions leave fewer than K valid
  candidates, every valid candidate is kept (`short` is set) and the caller decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Mode = Literal["best_worst", "random", "mean_deviation", "extremes_random"]
MODES: tuple[str, ...] = ("best_worst", "random", "mean_deviation", "extremes_random")


@dataclass(frozen=True)
class Selection:
    """Indices (into the group's candidates) to regenerate, and what was left out and why."""

    indices: list[int]
    excluded: list[int] = field(default_factory=list)  # non-finite rewards
    short: bool = False  # fewer than k valid candidates: all valid ones were kept


def _ranked(rewards: np.ndarray, valid: np.ndarray, descending: bool) -> np.ndarray:
    """Valid indices by reward, ties by index (lexsort keys: last is primary)."""
    key = -rewards[valid] if descending else rewards[valid]
    return valid[np.lexsort((valid, key))]


def _best_worst(rewards: np.ndarray, valid: np.ndarray, k: int) -> list[int]:
    n_best = (k + 1) // 2
    best = _ranked(rewards, valid, descending=True)[:n_best].tolist()
    worst_pool = np.setdiff1d(valid, best)
    worst = _ranked(rewards, worst_pool, descending=False)[: k - n_best].tolist()
    return best + worst


def select(
    rewards: Sequence[float] | np.ndarray, k: int, mode: Mode = "best_worst", seed: int = 0, keep: Sequence[int] = ()
) -> Selection:
    """Pick k candidates by `mode`, among them every candidate in `keep` whose reward is finite
    (first, in `keep`'s order; `mode` picks the rest from the others):

    best_worst       ceil(k/2) highest and floor(k/2) lowest rewards (docs/method.md's default);
    random           k uniformly at random;
    mean_deviation   the k largest |reward - mean of the valid rewards|;
    extremes_random  best_worst for half of k (rounded down), the rest at random from the middle.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    n = len(r)
    if mode not in MODES:
        raise ValueError(f"selection.mode {mode!r} is unknown; choose one of {list(MODES)}")
    if k < 1:
        raise ValueError(f"selection.k must be >= 1, got {k}")
    if n < k:
        raise ValueError(
            f"selection.k={k} exceeds the group's {n} candidates; raise the candidates per prompt (N) or lower k"
        )
    finite = np.isfinite(r)
    valid = np.flatnonzero(finite)
    excluded = np.flatnonzero(~finite).tolist()
    short = len(valid) < k
    k = min(k, len(valid))
    kept = [int(i) for i in keep if finite[i]]
    if len(kept) > k:
        raise ValueError(f"{len(kept)} candidates to keep exceed selection.k={k}; keep at most k")
    if kept:
        valid, k = np.setdiff1d(valid, kept), k - len(kept)
    rng = np.random.default_rng(seed)
    if k == 0:
        indices: list[int] = []
    elif mode == "best_worst":
        indices = _best_worst(r, valid, k)
    elif mode == "random":
        indices = rng.choice(valid, size=k, replace=False).tolist()
    elif mode == "mean_deviation":
        deviation = np.abs(r - r[valid].mean())
        indices = _ranked(deviation, valid, descending=True)[:k].tolist()
    else:  # extremes_random
        extremes = _best_worst(r, valid, k // 2) if k >= 2 else []
        middle = np.setdiff1d(valid, extremes)
        indices = extremes + rng.choice(middle, size=k - len(extremes), replace=False).tolist()
    return Selection(indices=kept + [int(i) for i in indices], excluded=excluded, short=short)
