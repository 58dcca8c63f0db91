"""Starting a run's workers on a cluster that may not have room for them yet.

Workers are Ray actors (and the learners a placement group): when the cluster lacks what one
reserves, Ray keeps it pending, and pending demand is what a Ray autoscaler or KubeRay adds
nodes for. So the run waits, without polling anything that would hide that demand, and says
what it waits for; after cluster.startup_timeout_s it fails with the same list."""

from __future__ import annotations

from collections.abc import Callable

from solrl.cluster.learners import LearnerGroup
from solrl.cluster.pools import WorkerPool
from solrl.cluster.seam import Runtime
from solrl.cluster.traffic import Traffic
from solrl.config import RunConfig

ROLES = {"rollout": "explore", "regen": "regenerate", "reward": "reward"}


class StartupTimeout(RuntimeError):
    """Workers did not start in time; the message names each and what it reserves."""


def describe(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items()) if v) + "}"


def check_cluster(runtime: Runtime, config: RunConfig, log: Callable[[str], None]) -> None:
    """Log what the run reserves beyond what the cluster has (nodes may still join)."""
    need = config.cluster.resources()
    total = runtime.resources()[0]
    have = {k: total.get(k, 0.0) for k in need}
    missing = {k: v - have.get(k, 0.0) for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if missing:
        pools = ", ".join(f"{pool} {n} x {describe(each)}" for pool, (n, each) in config.cluster.demands().items())
        log(
            f"the cluster has {describe(have)} but this run reserves {describe(need)} ({pools}): missing {describe(missing)}; "
            f"waiting up to cluster.startup_timeout_s={config.cluster.startup_timeout_s:g} for nodes to join"
        )


def await_ready(
    runtime: Runtime,
    waits: dict[str, tuple[object, dict[str, float]]],
    timeout_s: float,
    log: Callable[[str], None],
    on_waiting: Callable[[list[str]], None] = lambda _: None,
    log_every_s: float = 10.0,
) -> None:
    """Wait until every named ref is ready; `waits`: name -> (ref, what it reserves). Says what is
    still pending (log, every `log_every_s`; `on_waiting`, every second)."""
    start = last_log = runtime.now()  # the first line after log_every_s: starting a worker takes seconds anyway
    pending = dict(waits)
    while pending:
        refs = [ref for ref, _ in pending.values()]
        ready, _ = runtime.wait(refs, num_returns=len(refs), timeout=1.0)
        pending = {name: (ref, res) for name, (ref, res) in pending.items() if ref not in ready}
        if not pending:
            break
        lines = [f"waiting for {describe(res)} for {name}" for name, (_, res) in pending.items()]
        on_waiting(lines)
        now = runtime.now()
        if now - start >= timeout_s:
            raise StartupTimeout(
                f"{len(pending)} workers did not start within cluster.startup_timeout_s={timeout_s:g}: {'; '.join(lines)} "
                f"(the cluster has {describe(_free(runtime, pending))} free); add nodes with those resources, or shrink the pools "
                "(cluster.*_workers, cpus_per_worker, gpus_per_worker)"
            )
        if now - last_log >= log_every_s:
            log("; ".join(lines))
            last_log = now
    on_waiting([])


def _free(runtime: Runtime, pending: dict) -> dict[str, float]:
    """The cluster's free amounts of the resources the pending workers reserve."""
    free = runtime.resources()[1]
    return {k: free.get(k, 0.0) for _, res in pending.values() for k in res}


def start_workers(
    runtime: Runtime, config: RunConfig, log: Callable[[str], None], on_waiting: Callable[[list[str]], None], traffic: Traffic
) -> tuple[dict[str, WorkerPool], LearnerGroup]:
    """Spawn the worker pools (rollout, regen and, when configured, reward) and the learner
    group, and wait until every one has started."""
    c = config.cluster
    check_cluster(runtime, config, log)
    pools = {}
    for name, (n, _) in c.demands().items():
        if name in ROLES:
            pools[name] = WorkerPool(config, runtime, ROLES[name], name, traffic, spares=c.spare_rollout_workers if name == "rollout" else 0)
            pools[name].resize(n)
    learners = LearnerGroup(runtime, config, traffic, log)
    waits = {w.name: (w.ready, c.worker_resources(name)) for name, pool in pools.items() for w in pool.workers.values()}
    waits["learner group"] = (learners.ready, {k: v * c.learner_ranks for k, v in c.worker_resources("learner").items()})
    try:
        await_ready(runtime, waits, c.startup_timeout_s, log, on_waiting)
    except StartupTimeout:
        for pool in pools.values():
            pool.shutdown()
        learners.shutdown()
        raise
    learners.launch()
    return pools, learners


def starting(pools: dict[str, WorkerPool]) -> dict[str, list[str]]:
    """pool -> 'waiting for {resources} for NAME' for each worker not started yet (e.g. after a scale-up)."""
    return {name: [f"waiting for {describe(p.config.cluster.worker_resources(name))} for {w.name}" for w in p.starting()] for name, p in pools.items()}
