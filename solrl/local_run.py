"""The single-process Sol-RL engine: explore, select, regenerate, learn, sync, in one process.

The distributed driver runs the same steps with the same classes on Ray actors; this is the
reference it is checked against, and what `solrl train --local` runs. The run folder, eval
schedule, log and report are solrl.run's, shared with the driver.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Iterator

import torch

from solrl.builders import build_policy
from solrl.config import RunConfig
from solrl.determinism import single_threaded
from solrl.evaluation import eval_copy, evaluate_run, load_run_prompts, prompt_order, run_grid
from solrl.explore_audit import ExploreAudit
from solrl.learner.nft_trainer import NFTTrainer
from solrl.learner.step_stats import iteration_stats
from solrl.learner.trainer_state import load_trainer_state, trainer_state
from solrl.learner.weight_sync import WeightUpdate, check_served
from solrl.models.base import OLD, POLICY
from solrl.run import Adapter, eval_due, execute
from solrl.runs import IterationRow, iteration_row, make_groups
from solrl.types import Candidates, PromptGroup, Selection, per_selection
from solrl.workers.sampler import sampler_from_config
from solrl.workers.selector import Selector


class LocalRun:
    """Everything one single-process run holds."""

    start_iteration = 0  # > 0 after restore()

    def __init__(self, config: RunConfig, out: pathlib.Path, log: Callable[[str], None] = print):
        torch.manual_seed(config.seed)
        self.config, self.out, self.log = config, out, log
        self.policy = build_policy(config.model)
        self.prompts = load_run_prompts(config, config.prompts)
        self.order = prompt_order(config, self.prompts)
        # rollout.precision_control: explore's precision moves with the audited agreement (solrl.explore_audit)
        self.audit = ExploreAudit(config, self.policy, log) if config.rollout.precision_control else None
        self.explorer = self.audit.explorer(config.rollout.explore_precision, None) if self.audit else sampler_from_config(config, "explore", self.policy)
        # direct mode trains on the explored samples: there is no regeneration pool
        self.regenerator = sampler_from_config(config, "regenerate", self.policy) if config.rollout.mode == "sol" else None
        self.trainer = NFTTrainer.for_run(self.policy, config.train, config.rollout.regenerate, config.seed)
        self.selector = Selector(config.selection)

    @property
    def version(self) -> int:
        return self.trainer.step_count

    def groups(self, iteration: int) -> list[PromptGroup]:
        return make_groups(self.config, self.prompts, self.order, iteration, self.version)

    def choose(self, candidates: list[Candidates], iteration: int = 0) -> list[Selection]:
        kept = self.audit.kept(iteration, candidates) if self.audit is not None else [()] * len(candidates)
        return [self.selector.choose(c, keep) for c, keep in zip(candidates, kept, strict=True)]

    def adapter_states(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"policy": self.policy.adapter_state(POLICY), "old": self.policy.adapter_state(OLD), "ema": self.trainer.ema_state()}

    def eval_model(self, adapter: Adapter):
        """A merged copy in eval precision: the base (None), or with the 'ema', 'policy' or 'old'
        adapter, or an adapter state."""
        state = self.adapter_states()[adapter] if isinstance(adapter, str) else adapter
        return eval_copy(self.policy, self.config, state)

    def evaluate(self, adapter: Adapter, validation: bool = False) -> dict:
        return evaluate_run(self.config, self.eval_model(adapter), self.explorer.reward, base=adapter is None, validation=validation)

    def grid(self, adapter: Adapter):
        return run_grid(self.config, self.eval_model(adapter)) if self.config.eval.grid_rows else None

    def evaluated_states(self) -> tuple[dict[str, dict[str, torch.Tensor]], int]:
        return self.adapter_states(), self.version  # the row was just given out: nothing has trained since its eval

    def totals(self) -> dict:
        return {}

    def _update(self) -> WeightUpdate:
        return WeightUpdate.build(self.version, self.policy.adapter_state(OLD))

    def _sync(self) -> None:
        """The samplers serve the current rollout policy."""
        update = self._update()
        for name, worker in (("explore", self.explorer), ("regenerate", self.regenerator)):
            if worker is not None:
                check_served(name, worker.apply_update(update), self.version)

    def iteration(self, it: int) -> IterationRow:
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
        selections = self.choose(candidates, it)
        times["select"] = time.perf_counter() - start
        start = time.perf_counter()
        if direct:
            batch = self.explorer.batch_from_samples(selections, samples)
        else:
            batch = self.regenerator.regenerate(selections)
        times["regenerate"] = time.perf_counter() - start
        audit = self._audit(it, candidates, selections, batch) if self.audit is not None else None
        start = time.perf_counter()
        # deterministic: take the distributed learner group's step (its ranks' rows, one thread)
        world = self.config.cluster.learner_ranks if self.config.deterministic else 1
        with single_threaded(self.config.deterministic):
            updates = [self.trainer.step(part, world=world) for part in batch.split_by_group(self.config.train.updates_per_iteration)]
        stats = iteration_stats(updates)
        times["learn"] = time.perf_counter() - start
        start = time.perf_counter()
        self._sync()
        times["sync"] = time.perf_counter() - start
        row = iteration_row(it, self.version, candidates, selections, per_selection(batch.rewards, selections), times, stats)
        return row | ({"audit": audit} if audit is not None else {})

    def _audit(self, it: int, candidates, selections, batch) -> dict:
        """The explore audit on the policy that explored (before the step); a move switches the
        explore sampler, which the step's sync then brings up to date."""
        start = time.perf_counter()
        audit = self.audit.run(it, candidates, selections, per_selection(batch.rewards, selections), self.regenerator, self._update())
        if "switch" in audit:
            self.explorer = self.audit.explorer(self.audit.control.precision, None)
        return audit | {"seconds": round(time.perf_counter() - start, 3)}

    def iterate(self, stop: Callable[[], bool]) -> Iterator[IterationRow]:
        for it in range(self.start_iteration, self.config.train.iterations):
            row = self.iteration(it)
            if eval_due(self.config, it):
                row["eval"] = self.evaluate("ema")
                if self.config.keeps_best:
                    row["validation"] = self.evaluate("ema", validation=True)
            yield row
            if stop():
                return

    # -- checkpoints (written and resumed by solrl.run.Checkpoints) ---------------------------------
    def checkpoint_state(self, iteration: int) -> tuple[dict[str, torch.Tensor], dict]:
        precision = {"precision": self.audit.state(iteration)} if self.audit else {}
        return trainer_state(self.policy, self.trainer), {"step": self.version, "order": self.order.state()} | precision

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        load_trainer_state(self.policy, self.trainer, tensors, state["step"])
        self.start_iteration = state["iteration"]
        self.order.load_state(state["order"])
        if self.audit is not None and "precision" in state:
            self.audit.load_state(state["precision"])
            self.explorer = self.audit.explorer(self.audit.control.precision, None)
        self._sync()

    def checkpoint_wanted(self) -> bool:
        return False

    def checkpointed(self, path: pathlib.Path, iteration: int) -> None:
        pass

    def run(self, resume: pathlib.Path | None = None) -> dict:
        """The whole run (solrl.run.execute with this engine), continuing from the checkpoint
        `resume` names when given; returns eval.json's report."""
        return execute(self, self.config, self.out, self.log, resume=resume)
