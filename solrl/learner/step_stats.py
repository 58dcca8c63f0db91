"""The learner's figures in an iteration's row, and how an iteration's optimizer steps combine
into them. Apart from the trainer, so that what reads rows (every role's runs.py) loads no trainer."""

from __future__ import annotations

# An iteration's statistics: these averaged over its optimizer steps, the others its last step's.
MEAN_STATS = ("loss", "policy_loss", "kl", "grad_norm")
LAST_STATS = ("kl_weight", "old_decay", "lr")


def iteration_stats(steps: list[dict[str, float]]) -> dict[str, float]:
    """One iteration's statistics from its optimizer steps' (train.updates_per_iteration of them)."""
    out = {k: float(sum(s[k] for s in steps) / len(steps)) for k in MEAN_STATS}
    return out | {k: steps[-1][k] for k in LAST_STATS}
