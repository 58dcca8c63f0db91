"""What every real worker process shares: its thread count, and which heavy modules it has
loaded (its `info` reports them, so a stray import into a role is seen: tests/test_cluster_processes.py).

Each role's actor lives in its own module (sampler_actor, reward_actor, learner_actor) and Ray
imports only that one in the worker's process: a reward worker never loads the diffusion stack,
a sampler never loads FSDP or the trainer."""

from __future__ import annotations

import sys

import torch

HEAVY_MODULES = (
    "diffusers", "peft", "transformers", "torch.distributed.fsdp", "solrl.learner.rank", "solrl.learner.nft_trainer",
    "solrl.workers.sampler", "solrl.evaluation",
)  # fmt: skip


def set_threads(cpus: float) -> None:
    # Ray sets OMP_NUM_THREADS from num_cpus; torch reads it only at import, so set it explicitly.
    torch.set_num_threads(max(1, int(cpus)))


def heavy_modules() -> list[str]:
    """The heavy modules this process has imported."""
    return [m for m in HEAVY_MODULES if m in sys.modules]
