"""Weight publication: a learner step's WeightUpdate becomes the policy every sampler serves.

Each running sampler applies the update and reports the version it now serves, which is checked
(solrl.learner.weight_sync). Samplers still starting are not waited for: the pool keeps the
newest update and a worker applies it before its first task. A sampler that dies while applying
it is replaced, and the replacement starts from the pool's update in the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import ray
from ray.exceptions import RayActorError

from solrl.cluster.pools import WorkerPool
from solrl.learner.weight_sync import check_served


def publish(samplers: Iterable[WorkerPool], update_ref, nbytes: int, version: int, log: Callable[[str], None]) -> float:
    """Make `update_ref` (at `version`, `nbytes` of tensors) the weights every sampler serves; seconds taken."""
    start = time.perf_counter()
    samplers = list(samplers)
    for pool in samplers:
        pool.update, pool.update_bytes = update_ref, nbytes  # workers spawned from now on apply it first
    calls = [(pool, w, w.handle.apply_update.remote(update_ref)) for pool in samplers for w in list(pool.workers.values())]
    for pool, _, _ in calls:
        pool.traffic.add("weight_update", nbytes)
    starting = {w.name for pool in samplers for w in pool.starting()}
    for pool, w, ref in [c for c in calls if c[1].name not in starting]:
        try:
            check_served(w.name, ray.get(ref), version)
        except RayActorError:
            if not w.retiring:
                pool.replace_dead(w, log)
    return time.perf_counter() - start
