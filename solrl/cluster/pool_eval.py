"""Evaluation and sample grids on a run's sampler pools, which are otherwise idle while they run:
the eval images are shared out over every sampler, and a slice whose sampler dies is redone by
the others (the sampler replaced). With a reward pool one reward worker scores the eval; if it
dies, it is replaced and the eval redone."""

from __future__ import annotations

from collections.abc import Callable

from solrl.cluster.pools import WorkerPool, call_spread
from solrl.cluster.seam import HelperDied
from solrl.cluster.traffic import Traffic
from solrl.config import RunConfig
from solrl.evaluation import eval_plan, merge_measures, summarize_run
from solrl.nbytes import SCORER_BYTES


def samplers(pools: dict[str, WorkerPool]) -> tuple[WorkerPool, WorkerPool]:
    return (pools["rollout"], pools["regen"])


def policy_holders(pools: dict[str, WorkerPool]) -> tuple[WorkerPool, ...]:
    """Every pool whose workers serve the policy and are sent each update: the samplers, and the
    regeneration workers lent beside the learner ranks."""
    return samplers(pools) + ((pools["lent"],) if "lent" in pools else ())


def evaluate(
    config: RunConfig, pools: dict[str, WorkerPool], adapter, adapter_bytes: int, log: Callable[[str], None], traffic: Traffic, validation: bool = False
) -> dict:
    """The run's eval of `adapter` (a ref to an adapter state of `adapter_bytes`, fetched by each
    sampler that evaluates; None: the base model), on the validation prompts with `validation`."""
    base = adapter is None
    pairs = eval_plan(config, base, validation)
    while True:
        scorer = next(iter(pools["reward"].workers.values())) if "reward" in pools else None
        n = sum(len(pool.idle_or_busy()) for pool in samplers(pools))
        parts = [pairs[len(pairs) * i // n : len(pairs) * (i + 1) // n] for i in range(n)]
        calls = [(adapter, part, scorer and scorer.handle) for part in parts if part]
        try:
            passed = (adapter, scorer and scorer.handle)
            measures = call_spread(samplers(pools), "measure", calls, log, traffic, "eval", adapter_bytes, passed)
            for m in measures:
                traffic.add("eval", int(m.pop(SCORER_BYTES, [0])[0]))
            break
        except HelperDied:  # the reward worker scoring the eval died: replace it and redo the eval (same seeds)
            pools["reward"].replace_dead(scorer, log)
    return summarize_run(config, pairs, merge_measures(measures), base)


def grid(config: RunConfig, pools: dict[str, WorkerPool], adapter, adapter_bytes: int, log: Callable[[str], None], traffic: Traffic):
    """The run's sample grid of `adapter` (a ref to an adapter state; None: the base model), or
    None without one."""
    if not config.eval.grid_rows:
        return None
    return call_spread(samplers(pools), "grid", [(adapter,)], log, traffic, "eval", adapter_bytes, (adapter,))[0]


def adapter(learners, version: int, which: str | None) -> tuple[object, int]:
    """(a ref to the learner group's 'ema' / 'policy' adapter, its bytes), or (None, 0) for the base model."""
    if which is None:
        return None, 0
    refs, nbytes = learners.adapters(version)
    return refs[which], nbytes


def adapter_states(runtime, learners, version: int, traffic: Traffic) -> dict:
    """The policy, old and EMA adapter states, fetched to write the run's lora/."""
    refs, nbytes = learners.adapters(version)
    traffic.add("checkpoint", nbytes, receivers=len(refs))
    return dict(zip(refs, runtime.get(list(refs.values()))))
