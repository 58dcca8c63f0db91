"""The single-process Sol-RL loop: explore, select, regenerate, learn, sync, in one process.

The distributed driver runs the same steps with the same classes on Ray actors; this is the
reference it is checked against, and what `solrl train --local` runs.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Callable

import numpy as np
import torch

from solrl.actors.sampler import sampler_from_config
from solrl.actors.selector import Selector
from solrl.builders import build_policy
from solrl.config import RunConfig, dump_config
from solrl.determinism import single_threaded
from solrl.learner.nft_trainer import NFTTrainer
from solrl.learner.weight_sync import WeightUpdate, check_served
from solrl.models.base import OLD, POLICY
from solrl.evaluation import describe, evaluate_run, load_run_prompts, run_grid, run_report, write_grid
from solrl.runs import iteration_row, make_groups, prompt_order, save_lora
from solrl.types import Candidates, PromptGroup, Selection

class LocalRun:
    """Everything one single-process run holds."""

    def __init__(self, config: RunConfig, out: pathlib.Path, log: Callable[[str], None] = print):
        torch.manual_seed(config.seed)
        self.config, self.out, self.log = config, out, log
        self.policy = build_policy(config.model)
        self.prompts = load_run_prompts(config, config.prompts)
        self.order = prompt_order(config, self.prompts)
        ro = config.rollout
        self.explorer = sampler_from_config(config, "explore", self.policy)
        # direct mode trains on the explored samples: there is no regeneration pool
        self.regenerator = sampler_from_config(config, "regenerate", self.policy) if ro.mode == "sol" else None
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
        return make_groups(self.config, self.prompts, self.order, iteration, self.version)

    def choose(self, candidates: list[Candidates]) -> list[Selection]:
        return [self.selector.choose(c) for c in candidates]

    def eval_model(self, adapter: str | None):
        """A merged copy in eval precision: the base (None), or with the 'ema', 'policy' or 'old' adapter."""
        model = self.policy.inference_copy(self.config.eval.precision, adapter=None, compute_dtype=self.config.rollout.compute_dtype)
        if adapter is not None:
            state = self.trainer.ema_state() if adapter == "ema" else self.policy.adapter_state(POLICY if adapter == "policy" else OLD)
            model.update_adapter(state)
        return model

    def evaluate(self, adapter: str | None) -> dict:
        return evaluate_run(self.config, self.eval_model(adapter), self.explorer.reward, base=adapter is None)

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
        # deterministic: take the distributed learner group's step (its ranks' rows, one thread)
        world = self.config.cluster.learner_ranks if self.config.deterministic else 1
        with single_threaded(self.config.deterministic):
            updates = [self.trainer.step(part, world=world) for part in batch.split_by_group(self.config.train.updates_per_iteration)]
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
        rewards = batch.rewards.tolist()
        per_selection, offset = [], 0
        for sel in selections:
            per_selection.append(rewards[offset : offset + len(sel.seeds)])
            offset += len(sel.seeds)
        return iteration_row(it, self.version, candidates, selections, per_selection, times, stats)

    def run(self) -> dict:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(dump_config(cfg))
        metrics_path = self.out / "metrics.jsonl"
        metrics_path.write_text("")
        run_start = time.perf_counter()
        base = self.evaluate(None)
        self.log(f"base model: eval {describe(base)}")
        before = run_grid(cfg, self.eval_model(None)) if cfg.eval.grid_rows else None
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
                f"({sum(row['seconds'].values()):.1f}s)" + (f" eval {describe(row['eval'])}" if "eval" in row else "")
            )
        states = {"policy": self.policy.adapter_state(POLICY), "old": self.policy.adapter_state(OLD), "ema": self.trainer.ema_state()}
        save_lora(self.out / "lora", states, cfg.model, self.version)
        final = {adapter: self.evaluate(adapter) for adapter in ("ema", "policy")}
        if before is not None:
            write_grid(self.out / "grid.png", before, run_grid(cfg, self.eval_model("ema")))
        report = run_report(
            base,
            final["ema"],
            final["policy"],
            iterations=iterations,
            train_seconds=round(time.perf_counter() - train_start, 1),
            seconds=round(time.perf_counter() - run_start, 1),
        )
        (self.out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
        self.log(
            f"done in {report['seconds']:.0f}s: eval {describe(base)} -> {describe(final['ema'])} "
            f"(EMA; policy {describe(final['policy'])})"
        )
        return report
