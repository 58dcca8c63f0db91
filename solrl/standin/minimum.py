"""The least an iteration must move between processes, by kind (docs/architecture.md), for a
stand-in run: what its metrics row says it did, priced at the real model's sizes.

- conditioning: each trained prompt's conditioning once to each learner rank that trains a row
  of it, in the samplers' compute dtype;
- samples: each trained sample's x0 once, to the rank that trains it;
- rewards: each BF16 reward once to the driver, and every row's reward and seed, and every
  group's id, to each rank (advantages are normalized over the whole batch);
- explore_results: one proxy reward per explored seed to the driver;
- images (only with a reward pool): each image once, to the reward worker that scores it;
- weight_update: the new adapter once to each sampler serving it (the lent workers too);
- checkpoint: the learner state once to the driver when a checkpoint is due (taken after its
  iteration's row is written, so it counts in the next row);
- learner_state, eval, control: nothing (recovery, evals and task descriptions are extra).
"""

from __future__ import annotations

import math

import torch

from solrl.nbytes import KINDS, SCALAR
from solrl.standin.payloads import Payloads


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def unit_sizes(config) -> dict[str, int]:
    """Bytes of one prompt's conditioning, one sample, one image, one adapter and one learner state."""
    p = Payloads(config)
    adapter = sum(4 * p.rank * (m.fan_in + m.fan_out) for m in p.adapted)
    tensors = 2 * len(p.adapted)  # lora_A and lora_B of each adapted module
    return {
        "conditioning": sum(_nbytes(shape, dtype) for shape, dtype in p.cond.values()),
        "sample": _nbytes(p.latent, torch.float32),
        "image": _nbytes(p.image, torch.float32),
        "adapter": adapter,
        "learner_state": 5 * adapter + 4 * tensors,  # policy, old, EMA, Adam's two moments; a step count per tensor
    }


def iteration_minimum(config, row: dict) -> dict[str, int]:
    """The minimum of one iteration, by kind, from its metrics.jsonl row."""
    size, c = unit_sizes(config), config.cluster
    world, k = c.learner_ranks, config.selection.k
    samples, groups = row["regenerated"], math.ceil(row["regenerated"] / k)
    out = dict.fromkeys(KINDS, 0)
    out["conditioning"] = groups * size["conditioning"] * min(world, k)
    out["samples"] = samples * size["sample"]
    out["rewards"] = samples * SCALAR * (1 + 2 * world) + groups * SCALAR * world
    out["explore_results"] = row["candidates"] * SCALAR
    if c.reward_workers:
        out["images"] = (row["candidates"] + samples) * size["image"]
    if samples:
        out["weight_update"] = size["adapter"] * (row["workers"]["rollout"] + row["workers"]["regen"] + row["workers"].get("lent", 0))
    every = c.checkpoint_every  # a checkpoint is taken once its iteration's row is written: it counts in the next row
    if every and row["iteration"] > 0 and row["iteration"] % every == 0:
        out["checkpoint"] = size["learner_state"]
    return out
