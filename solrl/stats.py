"""Rank agreement between two score vectors (proxy vs BF16 rewards of the same seeds)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (Pearson correlation of average ranks); NaN if either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties counted on either side); NaN if either side is constant."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    tx, ty = n0 - np.count_nonzero(dx), n0 - np.count_nonzero(dy)
    denom = np.sqrt((n0 - tx) * (n0 - ty))
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def top_k_overlap(a: Sequence[float], b: Sequence[float], k: int, largest: bool = True) -> float:
    """Share of b's top-k (or bottom-k) indices that are also in a's."""
    x, y = np.asarray(a), np.asarray(b)
    sign = -1 if largest else 1
    top_a = set(np.argsort(sign * x, kind="stable")[:k].tolist())
    top_b = set(np.argsort(sign * y, kind="stable")[:k].tolist())
    return len(top_a & top_b) / k


def finite_mean(values: Sequence[float]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if len(arr) else float("nan")


def stratified_mean(values: np.ndarray, strata: Sequence[str]) -> tuple[float, float]:
    """(mean of the strata's means, its standard error) of `values` grouped by `strata`."""
    labels = sorted(set(strata))
    groups = [values[[i for i, s in enumerate(strata) if s == label]] for label in labels]
    mean = float(np.mean([g.mean() for g in groups]))
    var = sum(g.var(ddof=1) / len(g) if len(g) > 1 else 0.0 for g in groups)
    return mean, float(np.sqrt(var) / len(groups))
