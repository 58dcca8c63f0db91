"""Starting a run's workers on a cluster that may not have room for them yet.

Workers are Ray actors (and the learners a placement group): when the cluster lacks what one
reserves, Ray keeps it pending, and pending demand is what a Ray autoscaler or KubeRay adds
nodes for. So the run waits, without polling anything that would hide that demand, and says
what it waits for; after cluster.startup_timeout_s it fails with the same list."""

from __future__ import annotations

from collections.abc import Callable

from solrl.cluster.learners import LearnerGroup
from solrl.cluster.pools import Worker, WorkerPool
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
    explain: Callable[[dict], list[str]] | None = None,
) -> None:
    """Wait until every named ref is ready; `waits`: name -> (ref, what it reserves). Says what is
    still pending (log, every `log_every_s`; `on_waiting`, every second): `explain(pending)`'s
    lines, or what each pending one reserves."""
    start = last_log = runtime.now()  # the first line after log_every_s: starting a worker takes seconds anyway
    pending = dict(waits)
    while pending:
        refs = [ref for ref, _ in pending.values()]
        ready, _ = runtime.wait(refs, num_returns=len(refs), timeout=1.0)
        pending = {name: (ref, res) for name, (ref, res) in pending.items() if ref not in ready}
        if not pending:
            break
        lines = explain(pending) if explain else [f"{name}: waiting for resources {describe(res)}" for name, (_, res) in pending.items()]
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
    waits["learner group"] = (learners.ready, {k: v * c.learner_ranks for k, v in c.learner_bundle().items()})

    def explain(pending: dict) -> list[str]:
        lines = [line for lines in advance(pools).values() for line in lines]
        return lines + [f"learner group: waiting for resources {describe(waits['learner group'][1])}"] * ("learner group" in pending)

    try:
        await_ready(runtime, waits, c.startup_timeout_s, log, on_waiting, explain=explain)
    except StartupTimeout:
        for pool in pools.values():
            pool.shutdown()
        learners.shutdown()
        raise
    advance(pools)  # those that started since the last look are ready now, not first seen so later
    learners.launch()
    if c.lend_learners:
        pools["lent"] = lend(runtime, config, learners, traffic, log)
        await_ready(runtime, {w.name: (w.ready, c.worker_resources("lent")) for w in pools["lent"].workers.values()}, c.startup_timeout_s, log)
    return pools, learners


def lend(runtime: Runtime, config: RunConfig, learners: LearnerGroup, traffic: Traffic, log: Callable[[str], None]) -> WorkerPool:
    """A regeneration worker in each learner rank's bundle (cluster.lend_learners), moved to the
    new reservation whenever the group restarts (Ray ends the actors of a released one)."""
    pool = WorkerPool(config, runtime, "regenerate", "lent", traffic, reservation=lambda: learners.pg)
    pool.resize(config.cluster.learner_ranks)

    def follow() -> None:
        pool.respawn()
        log(f"lent workers {', '.join(pool.workers)} started beside the restarted learner group")

    learners.on_restart = follow
    return pool


STAGES = {"resources": "waiting for resources", "imports": "importing and building its model", "weights": "receiving weights"}


def advance(pools: dict[str, WorkerPool], log: Callable[[str], None] | None = None) -> dict[str, list[str]]:
    """Move each starting worker through its start-up (resources -> imports -> weights -> ready)
    and say, per pool, what each one still waits for. With `log`, a worker that becomes ready
    says how long each stage took (scale-ups and replacements: what a user waits on)."""
    lines = {}
    for name, pool in pools.items():
        pool.starting()
        rt, now = pool.runtime, pool.runtime.now()
        warming = [w for w in pool.workers.values() if w.phase != "ready" and not w.retiring]
        unstarted = [w for w in warming if w.ready is not None]
        placed = dict(zip(map(id, unstarted), rt.placed([w.handle for w in unstarted]), strict=True)) if unstarted else {}
        updates = [w.updated for w in warming if w.ready is None and w.updated is not None]
        applied = set(rt.wait(updates, num_returns=len(updates), timeout=0)[0]) if updates else set()
        for w in warming:
            if w.ready is not None:
                phase = "imports" if placed[id(w)] else "resources"
            else:
                phase = "weights" if w.updated is not None and w.updated not in applied else "ready"
            if phase != w.phase:
                w.took[w.phase] = w.took.get(w.phase, 0.0) + now - w.phase_at
                w.phase, w.phase_at = phase, now
                if phase == "ready" and log is not None:
                    log(_ready_line(w, now))
        resources = describe(pool.config.cluster.worker_resources(name))
        lines[name] = [_waiting_line(w, now, resources, pool.update_bytes) for w in warming if w.phase != "ready"]
    return lines


def _waiting_line(w: Worker, now: float, resources: str, update_bytes: int) -> str:
    detail = {"resources": f" {resources}", "imports": "", "weights": f" v{w.serving} ({update_bytes / 1e6:.1f} MB)"}[w.phase]
    return f"{w.name}: {STAGES[w.phase]}{detail} for {now - w.phase_at:.0f} s"


def _ready_line(w: Worker, now: float) -> str:
    took = dict(w.took)
    if "imports" not in took and "resources" in took:  # placed and started between two looks
        took["waiting for resources, starting and importing"] = took.pop("resources")
    stages = ", ".join(f"{STAGES.get(k, k)} {v:.1f} s" for k, v in took.items())
    return f"{w.name} is ready {now - w.spawned_at:.1f} s after it was spawned ({stages})"
