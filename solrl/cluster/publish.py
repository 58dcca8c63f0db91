"""Weight publication: a learner step's WeightUpdate becomes the policy every sampler serves,
and the driver waits for no sampler while it does.

Each sampler is sent the update by reference (it fetches it once, verifies the checksum and
merges it; solrl.learner.weight_sync). Actor calls run in the order they are sent, so every task
handed to a sampler afterwards runs on the new weights: the dispatcher checks that each result
reports the version its sampler was last sent, and the ledger drops results older than the lag
bound, which is all the bound requires. Samplers still starting get the update the same way, and
a worker spawned later applies the pool's newest update before its first task. Applies are
watched as they finish (`poll`): a sampler that died applying one is replaced, a failed checksum
is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from solrl.cluster.pools import Worker, WorkerPool
from solrl.cluster.seam import Runtime, WorkerDied
from solrl.learner.weight_sync import check_served


class Publisher:
    def __init__(self, runtime: Runtime, samplers: Callable[[], Iterable[WorkerPool]], log: Callable[[str], None]):
        self.runtime, self.samplers, self.log = runtime, samplers, log
        self.pending: list[tuple[WorkerPool, Worker, object, int]] = []

    def publish(self, update_ref, nbytes: int, version: int) -> float:
        """Send `update_ref` (at `version`, `nbytes` of tensors) to every sampler; seconds taken."""
        start = self.runtime.now()
        for pool in self.samplers():
            pool.update, pool.update_bytes, pool.update_version = update_ref, nbytes, version  # workers spawned from now on apply it first
            for w in list(pool.workers.values()):
                ref = self.runtime.call(w.handle, "apply_update", update_ref)
                self.pending.append((pool, w, ref, version))
                w.serving, w.updated = version, ref if w.phase != "ready" else None
                pool.traffic.add("weight_update", nbytes)
        return self.runtime.now() - start

    def poll(self) -> None:
        """Check the applies that have finished; never waits."""
        if not self.pending:
            return
        done, _ = self.runtime.wait([ref for _, _, ref, _ in self.pending], num_returns=len(self.pending), timeout=0)
        finished = set(done)
        for pool, w, ref, version in [p for p in self.pending if p[2] in finished]:
            try:
                check_served(w.name, self.runtime.get(ref), version)
            except WorkerDied:
                if not w.retiring:
                    pool.replace_dead(w, self.log)
        self.pending = [p for p in self.pending if p[2] not in finished]
