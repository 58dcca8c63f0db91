"""What every runner shares (the single-process loop and the Ray driver): the prompt order,
prompt groups and their seeds, the per-iteration metrics row, and the LoRA files."""

from __future__ import annotations

import json
import pathlib
import random
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from solrl.config import ModelConfig, RunConfig
from solrl.learner.step_stats import LAST_STATS, MEAN_STATS
from solrl.models.base import LoraSpec
from solrl.models.lora_export import export_diffusers_lora
from solrl.sampling import derive_seeds
from solrl.sampling.noise import hash_ints
from solrl.stats import finite_mean, kendall, spearman
from solrl.types import Candidates, PromptGroup, Selection

STEP_STATS = MEAN_STATS + LAST_STATS  # the learner's figures in a row
LORA_FILES = {"policy": "policy.safetensors", "old": "old.safetensors", "ema": "ema.safetensors"}


class PromptOrder:
    """An endless, seeded order over the prompts.

    Without strata: a fresh shuffle of all prompts each epoch. With strata (one label per prompt,
    e.g. its task): each round visits every stratum once in a shuffled order, and each stratum
    walks its own shuffled cycle, so a task with few captions is trained as often as one with many.
    """

    def __init__(self, n_prompts: int, seed: int, strata: list[str] | None = None):
        self.n, self.seed, self.position = n_prompts, seed, 0
        self.members: dict[str, list[int]] = {}
        for i, label in enumerate(strata or []):
            self.members.setdefault(label, []).append(i)
        self.labels = sorted(self.members)
        self.drawn = dict.fromkeys(self.labels, 0)

    def _shuffled(self, items: list[int], *key: int) -> list[int]:
        items = list(items)
        random.Random(hash_ints(self.seed, *key)).shuffle(items)
        return items

    def take(self, k: int) -> list[int]:
        """One iteration's k distinct prompts: the order's next draws, skipping a prompt already
        taken in this iteration (an epoch or stratum cycle can end mid-iteration)."""
        if k > self.n:
            raise ValueError(f"cannot take {k} distinct prompts from {self.n}")
        out: list[int] = []
        while len(out) < k:
            i = self._next()
            if i not in out:
                out.append(i)
        return out

    def _next(self) -> int:
        if not self.labels:
            epoch, index = divmod(self.position, self.n)
            i = self._shuffled(list(range(self.n)), epoch)[index]
        else:
            rnd, slot = divmod(self.position, len(self.labels))
            label = self.labels[self._shuffled(list(range(len(self.labels))), -1, rnd)[slot]]
            members = self.members[label]
            epoch, index = divmod(self.drawn[label], len(members))
            i = self._shuffled(members, -2, self.labels.index(label), epoch)[index]
            self.drawn[label] += 1
        self.position += 1
        return i

    def state(self) -> dict:
        """Where the order stands, for checkpoints."""
        return {"position": self.position, "drawn": dict(self.drawn)}

    def load_state(self, state: dict) -> None:
        self.position = int(state["position"])
        self.drawn = {k: int(v) for k, v in state["drawn"].items()}


def save_lora(directory: pathlib.Path, states: dict[str, dict[str, torch.Tensor]], model: ModelConfig, version: int, kept: dict | None = None) -> None:
    """One safetensors file per adapter (policy, old, ema) plus the LoRA shape, and the EMA adapter
    (the one evaluated) in diffusers' format under diffusers/ for `pipe.load_lora_weights`;
    `kept`: which periodic eval train.keep_best chose them by, recorded beside the shape."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, state in states.items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / LORA_FILES[name]))
    meta = {"version": version, "base_model": model.path or "shipped", "kind": model.kind} | ({"kept": kept} if kept else {})
    (directory / "adapter_config.json").write_text(json.dumps({**model.lora.model_dump(), **meta}, indent=2) + "\n")
    if "ema" in states:
        export_diffusers_lora(directory / "diffusers", states["ema"], model.lora, model.kind)


def load_lora(directory: str | pathlib.Path, which: str = "ema") -> tuple[dict[str, torch.Tensor], LoraSpec]:
    """An adapter state saved by save_lora, and its LoRA shape."""
    directory = pathlib.Path(directory)
    if which not in LORA_FILES:
        raise ValueError(f"adapter {which!r} is unknown; choose one of {list(LORA_FILES)}")
    config = directory / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{directory} is not a solrl LoRA folder: adapter_config.json is missing")
    fields = json.loads(config.read_text())
    spec = LoraSpec(**{k: fields[k] for k in LoraSpec.model_fields})
    return load_file(str(directory / LORA_FILES[which])), spec


def make_groups(config: RunConfig, prompts: Sequence[str], order: PromptOrder, iteration: int, version: int) -> list[PromptGroup]:
    """The next prompts_per_iteration prompt groups; seeds derive from (run seed, iteration, prompt)."""
    n, k = config.rollout.candidates, config.rollout.prompts_per_iteration
    if k > len(prompts):
        raise ValueError(
            f"rollout.prompts_per_iteration={k} is more than the {len(prompts)} prompts of {config.prompts!r}; "
            f"an iteration trains distinct prompts, so set it to at most {len(prompts)}"
        )
    return [
        PromptGroup(i, prompts[i], tuple(derive_seeds(config.seed, iteration, i, n)), iteration, version)
        for i in order.take(k)
    ]


class IterationRow(TypedDict, total=False):
    """One line of metrics.jsonl: what every engine reports of an iteration (iteration_row), what
    the distributed engine adds (solrl.cluster.telemetry) and what the run adds (solrl.run)."""

    iteration: int
    version: int  # the policy version after the iteration's step
    proxy_reward_mean: float
    proxy_reward_max: float
    selected_proxy_mean: float
    bf16_reward_mean: float
    bf16_reward_std: float
    spearman: float  # explore preview against BF16, over each regenerated group's seeds
    kendall: float
    excluded_rewards: int
    candidates: int
    regenerated: int
    seconds: dict[str, float]  # by stage
    loss: float
    policy_loss: float
    kl: float
    kl_weight: float  # the weight the step used (train.nft.kl_target adapts it)
    grad_norm: float
    old_decay: float
    lr: float  # the learning rate of the iteration's last step (train.optim.schedule)
    # the distributed engine
    iteration_seconds: float
    busy: dict[str, float]  # by worker, over the interval since the previous row
    queues: dict[str, int]
    policy_lag: int
    sync_bytes: int
    dropped: dict[str, int]  # since the previous row, by reason
    restarts: dict[str, int]
    workers: dict[str, int]  # pool sizes
    spares: dict[str, int]  # spare workers kept beside a pool (cluster.spare_rollout_workers)
    bytes: dict[str, int]  # moved between processes since the previous row, by kind
    autoscale: dict[str, int]
    # the run
    eval: dict
    modeled_cost: dict[str, float]
    modeled_cost_total: dict[str, float]
    elapsed: float


def iteration_row(
    it: int,
    version: int,
    candidates: Sequence[Candidates],
    selections: Sequence[Selection],
    bf16: Sequence[Sequence[float]],
    seconds: dict[str, float],
    stats: dict[str, float],
) -> IterationRow:
    """The metrics.jsonl row of one iteration; `bf16` holds each selection's BF16 rewards."""
    proxy_all = [r for c in candidates for r in c.proxy_rewards]
    every = torch.tensor([r for rs in bf16 for r in rs], dtype=torch.float64)
    flat = every[torch.isfinite(every)]  # non-finite BF16 rewards are quarantined, counted below
    return {
        "iteration": it,
        "version": version,
        "proxy_reward_mean": finite_mean(proxy_all),
        "proxy_reward_max": float(np.nanmax(proxy_all)) if proxy_all else float("nan"),
        "selected_proxy_mean": finite_mean([r for s in selections for r in s.proxy_rewards]),
        "bf16_reward_mean": float(flat.mean()) if len(flat) else float("nan"),
        "bf16_reward_std": float(flat.std(correction=0)) if len(flat) else float("nan"),
        "spearman": finite_mean([spearman(s.proxy_rewards, b) for s, b in zip(selections, bf16, strict=True)]),
        "kendall": finite_mean([kendall(s.proxy_rewards, b) for s, b in zip(selections, bf16, strict=True)]),
        "excluded_rewards": sum(s.excluded for s in selections) + int((~torch.isfinite(every)).sum()),
        "candidates": len(proxy_all),
        "regenerated": len(flat),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        **{k: stats[k] for k in STEP_STATS},
    }
