"""The explore audit and the precision moves it causes, for an engine that holds its samplers in
process (solrl.local_run): rollout.precision_control (solrl.precision_control has the rule; the
distributed run's audit is solrl.cluster.audit_desk, its rollout workers' samplers ExploreSamplers).

Each iteration, after the selected seeds are regenerated: every group's audit seeds (drawn at
random) get their BF16 rewards (the selected ones from the training batch, the others from a
regeneration made only for the audit, never trained on; with in_batch the selection kept them all),
and previews at the rungs the controller
probes (the next cheaper one while explore runs above the cheapest, the next safer one while its
agreement has been poor). The figures go into the metrics row under
"audit" (with the images the audit drew, which solrl.cost prices), and a move switches the explore
sampler's precision before the next iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from solrl.audit_schedule import AuditSchedule, free_figure
from solrl.config import RunConfig
from solrl.learner.weight_sync import WeightUpdate
from solrl.precision_control import PrecisionController, audit_agreement, audit_seeds, probe_figures, rung_parts
from solrl.stats import finite_mean
from solrl.types import Candidates, PromptGroup, Selection, per_selection
from solrl.workers.sampler import SamplerWorker, sampler_from_config


def with_explore_rung(config: RunConfig, rung: str) -> RunConfig:
    """`config` exploring at a ladder rung: its precision, and its step count where it names one."""
    precision, steps = rung_parts(rung)
    ro = config.rollout
    explore = ro.explore if steps is None else ro.explore.model_copy(update={"steps": steps})
    return config.model_copy(update={"rollout": ro.model_copy(update={"explore_precision": precision, "explore": explore})})


class ExploreSamplers:
    """Explore samplers of one policy by precision, each built when first needed (a quantized copy
    of the policy's base weights) and brought to the served adapter when asked for."""

    def __init__(self, config: RunConfig, policy, with_reward: bool = True, first: SamplerWorker | None = None):
        self.config, self.policy, self.with_reward = config, policy, with_reward
        self.samplers: dict[str, SamplerWorker] = {config.rollout.explore_precision: first} if first is not None else {}

    def at(self, precision: str, update: WeightUpdate | None) -> SamplerWorker:
        """The explore sampler at `precision`, serving `update` (the current rollout policy; None:
        as it is)."""
        if precision not in self.samplers:
            config = with_explore_rung(self.config, precision)
            self.samplers[precision] = sampler_from_config(config, "explore", self.policy, with_reward=self.with_reward)
        sampler = self.samplers[precision]
        if update is not None and sampler.version != update.version:
            sampler.apply_update(update)
        return sampler


class ExploreAudit:
    def __init__(self, config: RunConfig, policy, log: Callable[[str], None]):
        self.config, self.log = config, log
        self.control = PrecisionController(config.rollout.precision_control, config.rollout.explore_precision)
        self.schedule = AuditSchedule(config.rollout.precision_control, config.rollout.max_policy_lag)
        self.samplers = ExploreSamplers(config, policy)
        self.ahead: tuple[int, bool] | None = None  # in_batch: the iteration decided before its selection, and whether it is audited

    def explorer(self, precision: str, update: WeightUpdate | None) -> SamplerWorker:
        """The explore sampler at `precision`, serving `update` (the current rollout policy)."""
        return self.samplers.at(precision, update)

    def draw(self, iteration: int, candidates: Sequence[Candidates]) -> list[tuple[int, ...]]:
        """Each group's audit seeds, drawn at random as the distributed run draws them."""
        n, seed = self.config.rollout.precision_control.audit, self.config.seed
        return [audit_seeds(c.group.seeds, n, (seed, iteration, c.group.prompt_id)) for c in candidates]

    def kept(self, iteration: int, candidates: Sequence[Candidates]) -> list[tuple[int, ...]]:
        """The seeds each group's selection must keep: with in_batch, its audit seeds when `iteration`
        is audited (decided now, before the selection); otherwise none."""
        if not self.config.rollout.precision_control.in_batch:
            return [()] * len(candidates)
        self.ahead = (iteration, self.schedule.audits(iteration, self.control.precision))
        return self.draw(iteration, candidates) if self.ahead[1] else [()] * len(candidates)

    def run(
        self, iteration: int, candidates: Sequence[Candidates], selections: Sequence[Selection], bf16: list[list[float]], regenerator: SamplerWorker, update: WeightUpdate
    ) -> dict:
        """The audit of one iteration: its figures for the metrics row, and the move (if any) applied
        to the controller. `bf16`: the selected seeds' rewards, per selection."""
        # in prompt order, as the distributed desk reports, so per-group figures list alike in both engines
        order = sorted(range(len(candidates)), key=lambda i: candidates[i].group.prompt_id)
        candidates, selections, bf16 = [candidates[i] for i in order], [selections[i] for i in order], [bf16[i] for i in order]
        drawn, in_batch = self.draw(iteration, candidates), self.config.rollout.precision_control.in_batch
        audited = in_batch and self.ahead == (iteration, True)  # the audit seeds were selected to train on
        leave_out = drawn if audited else [()] * len(drawn)
        self.schedule.record(iteration, finite_mean([free_figure(s.seeds, s.proxy_rewards, b, o) for s, b, o in zip(selections, bf16, leave_out, strict=True)]))
        if not in_batch:
            audited = self.schedule.audits(iteration, self.control.precision)
        if not audited:
            return {"precision": self.control.precision} | self.schedule.figures(iteration)
        known = [dict(zip(s.seeds, r, strict=True)) for s, r in zip(selections, bf16, strict=True)]
        missing = [Selection(c.group, tuple(x for x in d if x not in k), ()) for c, d, k in zip(candidates, drawn, known, strict=True)]
        extra = [(i, s) for i, s in enumerate(missing) if s.seeds]  # audited seeds the selector left: regenerated for the audit only
        if extra:
            batch = regenerator.regenerate([s for _, s in extra])
            for (i, sel), rewards in zip(extra, per_selection(batch.rewards, [s for _, s in extra]), strict=True):
                known[i].update(zip(sel.seeds, rewards, strict=True))
        truth = [[k[x] for x in d] for k, d in zip(known, drawn, strict=True)]
        previews = [[dict(zip(c.group.seeds, c.proxy_rewards, strict=True))[x] for x in d] for c, d in zip(candidates, drawn, strict=True)]
        control = self.control
        figures = {"precision": control.precision, "spearman": audit_agreement(previews, truth), "regenerated": sum(len(s.seeds) for _, s in extra)}
        figures |= self.schedule.figures(iteration)
        probes = control.probes(control.precision)
        groups = [PromptGroup(c.group.prompt_id, c.group.prompt, d, iteration, c.group.version) for c, d in zip(candidates, drawn, strict=True)]
        probed = {rung: [c.proxy_rewards for c in self.explorer(rung, update).explore(groups)] for rung in probes}
        figures |= probe_figures(control, probed, previews, truth)
        if probes:
            figures["previewed_at"] = {rung: sum(map(len, drawn)) for rung in probes}
        move = control.observe(iteration, figures["spearman"], figures.get("cheaper_spearman"), figures.get("safer_gains", ()))
        if move is not None:
            self.log(f"explore precision {move.source} -> {move.target} after iteration {iteration + 1}: {move.reason}")
            figures["switch"] = {"from": move.source, "to": move.target, "reason": move.reason}
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


    def state(self, through: int) -> dict:
        """The controller's state and the sentinel's figures, for a checkpoint after iteration `through`."""
        return self.control.state() | {"sentinel": self.schedule.state(through)}

    def load_state(self, state: dict) -> None:
        self.control.load_state(state)
        self.schedule.load_state(state.get("sentinel", {}))
