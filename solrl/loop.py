"""The single-process Sol-RL loop: explore, select, regenerate, learn, sync, in one process.

The distributed driver runs the same steps with the same classes on Ray actors; this is the
reference it is checked against, and what `solrl train --local` runs.
"""

from __future__ import annotations

import json
import pathlib
import random
import time
from collections.abc import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from solrl.actors.sampler import SamplerWorker
from solrl.actors.selector import Selector
from solrl.builders import build_policy, build_reward
from solrl.config import RunConfig, dump_config
from solrl.learner.nft_trainer import NFTTrainer
from solrl.learner.weight_sync import WeightUpdate, check_served
from solrl.models.base import OLD, POLICY, LoraSpec
from solrl.sampling import derive_seeds
from solrl.sampling.noise import hash_ints
from solrl.stats import finite_mean, kendall, spearman
from solrl.toy.captions import load_prompts, parse_caption
from solrl.toy.evaluate import evaluate
from solrl.types import Candidates, PromptGroup, Selection

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
        out = []
        for _ in range(k):
            if not self.labels:
                epoch, index = divmod(self.position, self.n)
                out.append(self._shuffled(list(range(self.n)), epoch)[index])
            else:
                rnd, slot = divmod(self.position, len(self.labels))
                label = self.labels[self._shuffled(list(range(len(self.labels))), -1, rnd)[slot]]
                members = self.members[label]
                epoch, index = divmod(self.drawn[label], len(members))
                out.append(self._shuffled(members, -2, self.labels.index(label), epoch)[index])
                self.drawn[label] += 1
            self.position += 1
        return out


def save_lora(directory: pathlib.Path, states: dict[str, dict[str, torch.Tensor]], spec: LoraSpec, meta: dict) -> None:
    """One safetensors file per adapter (policy, old, ema) plus the LoRA shape."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, state in states.items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / LORA_FILES[name]))
    (directory / "adapter_config.json").write_text(json.dumps({**spec.model_dump(), **meta}, indent=2) + "\n")


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


class LocalRun:
    """Everything one single-process run holds."""

    def __init__(self, config: RunConfig, out: pathlib.Path, log: Callable[[str], None] = print):
        torch.manual_seed(config.seed)
        self.config, self.out, self.log = config, out, log
        self.policy = build_policy(config.model)
        self.reward = build_reward(config.reward)
        self.prompts = load_prompts(config.prompts)
        self.eval_prompts = load_prompts(config.eval.prompts)
        strata = [parse_caption(p).task for p in self.prompts] if config.prompt_sampling == "by_task" else None
        self.order = PromptOrder(len(self.prompts), config.seed, strata)
        ro = config.rollout
        self.explorer = SamplerWorker(self.policy, self.reward, ro.explore_precision, ro.explore, ro.quant, ro.compute_dtype)
        # direct mode trains on the explored samples: there is no regeneration pool
        self.regenerator = (
            SamplerWorker(self.policy, self.reward, ro.regenerate_precision, ro.regenerate, ro.quant, ro.compute_dtype)
            if ro.mode == "sol"
            else None
        )
        self.trainer = NFTTrainer(
            self.policy,
            config.train.nft,
            config.train.optim,
            train_steps=ro.regenerate.steps,
            shift=ro.regenerate.shift,
            seed=config.seed,
            micro_batch=config.train.micro_batch,
        )
        self.selector = Selector(config.selection)
        self.version = 0

    def groups(self, iteration: int) -> list[PromptGroup]:
        ids = self.order.take(self.config.rollout.prompts_per_iteration)
        n = self.config.rollout.candidates
        return [PromptGroup(i, self.prompts[i], tuple(derive_seeds(self.config.seed, iteration, i, n)), iteration, self.version) for i in ids]

    def choose(self, candidates: list[Candidates]) -> list[Selection]:
        return [self.selector.choose(c) for c in candidates]

    def evaluate(self, adapter: str) -> dict:
        ev = self.config.eval
        state = self.trainer.ema_state() if adapter == "ema" else self.policy.adapter_state(POLICY if adapter == "policy" else OLD)
        model = self.policy.inference_copy(ev.precision, adapter=None, compute_dtype=self.config.rollout.compute_dtype)
        model.update_adapter(state)
        return evaluate(model, self.eval_prompts, ev.n, ev.sampling, ev.seed)

    def iteration(self, it: int) -> dict:
        times = {}
        direct = self.regenerator is None
        start = time.perf_counter()
        groups = self.groups(it)
        candidates = self.explorer.explore(groups, keep_samples=direct)
        if direct:
            candidates, x0 = candidates
            keys = [(g.prompt_id, s) for g in groups for s in g.seeds]
            samples = dict(zip(keys, x0))
        times["explore"] = time.perf_counter() - start
        start = time.perf_counter()
        selections = self.choose(candidates)
        times["select"] = time.perf_counter() - start
        start = time.perf_counter()
        if direct:
            batch = self.explorer.batch_from_samples(selections, samples)
        else:
            batch = self.regenerator.regenerate(selections)
        times["regenerate"] = time.perf_counter() - start
        start = time.perf_counter()
        updates = [self.trainer.step(part) for part in batch.split_by_group(self.config.train.updates_per_iteration)]
        stats = {k: float(np.mean([u[k] for u in updates])) for k in updates[0]}
        stats["old_decay"] = updates[-1]["old_decay"]
        times["learn"] = time.perf_counter() - start
        start = time.perf_counter()
        self.version = self.trainer.step_count
        update = WeightUpdate.build(self.version, self.policy.adapter_state(OLD))
        for name, worker in (("explore", self.explorer), ("regenerate", self.regenerator)):
            if worker is not None:
                check_served(name, worker.apply_update(update), self.version)
        times["sync"] = time.perf_counter() - start
        proxy_all = [r for c in candidates for r in c.proxy_rewards]
        rho, tau = [], []
        offset = 0
        for s in selections:
            bf16 = batch.rewards[offset : offset + len(s.seeds)].tolist()
            offset += len(s.seeds)
            rho.append(spearman(s.proxy_rewards, bf16))
            tau.append(kendall(s.proxy_rewards, bf16))
        return {
            "iteration": it,
            "version": self.version,
            "proxy_reward_mean": finite_mean(proxy_all),
            "proxy_reward_max": float(np.nanmax(proxy_all)),
            "selected_proxy_mean": finite_mean([r for s in selections for r in s.proxy_rewards]),
            "bf16_reward_mean": float(batch.rewards.mean()),
            "bf16_reward_std": float(batch.rewards.std(correction=0)),
            "spearman": finite_mean(rho),
            "kendall": finite_mean(tau),
            "excluded_rewards": sum(s.excluded for s in selections),
            "candidates": len(proxy_all),
            "regenerated": len(batch),
            "seconds": {k: round(v, 3) for k, v in times.items()},
            **{k: stats[k] for k in ("loss", "policy_loss", "kl", "grad_norm", "old_decay")},
        }

    def run(self) -> dict:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(dump_config(cfg))
        metrics_path = self.out / "metrics.jsonl"
        metrics_path.write_text("")
        run_start = time.perf_counter()
        base = evaluate(self.policy.inference_copy(cfg.eval.precision, adapter=None, compute_dtype=cfg.rollout.compute_dtype),
                        self.eval_prompts, cfg.eval.n, cfg.eval.sampling, cfg.eval.seed)
        self.log(f"base model: eval accuracy {base['accuracy']:.3f}, score {base['score']:.3f}")
        iterations, train_start = 0, time.perf_counter()
        for it in range(cfg.train.iterations):
            if cfg.train.max_seconds and time.perf_counter() - train_start >= cfg.train.max_seconds:
                self.log(f"stopping after {it} iterations: train.max_seconds={cfg.train.max_seconds} reached")
                break
            row = self.iteration(it)
            iterations = it + 1
            if cfg.eval.every and (it + 1) % cfg.eval.every == 0 and it + 1 < cfg.train.iterations:
                row["eval"] = self.evaluate("ema")
            row["elapsed"] = round(time.perf_counter() - run_start, 1)
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            self.log(
                f"iter {it + 1}/{cfg.train.iterations}: bf16 reward {row['bf16_reward_mean']:.3f} "
                f"proxy {row['proxy_reward_mean']:.3f} rho {row['spearman']:.2f} loss {row['loss']:.4f} "
                f"({sum(row['seconds'].values()):.1f}s)" + (f" eval {row['eval']['accuracy']:.3f}" if "eval" in row else "")
            )
        states = {"policy": self.policy.adapter_state(POLICY), "old": self.policy.adapter_state(OLD), "ema": self.trainer.ema_state()}
        save_lora(self.out / "lora", states, cfg.model.lora, {"version": self.version, "base_model": cfg.model.path or "shipped"})
        final = {adapter: self.evaluate(adapter) for adapter in ("ema", "policy")}
        report = {
            "base_eval": base,
            "final_eval": final["ema"],
            "final_eval_policy": final["policy"],
            "improvement": round(final["ema"]["accuracy"] - base["accuracy"], 4),
            "iterations": iterations,
            "train_seconds": round(time.perf_counter() - train_start, 1),
            "seconds": round(time.perf_counter() - run_start, 1),
        }
        (self.out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
        self.log(
            f"done in {report['seconds']:.0f}s: eval accuracy {base['accuracy']:.3f} -> {final['ema']['accuracy']:.3f} "
            f"(EMA; policy {final['policy']['accuracy']:.3f})"
        )
        return report
