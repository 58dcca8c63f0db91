"""The virtual-clock runtime: the real scheduler (driver, dispatcher, pools, publisher, learner
group) over stand-in workers that live in the driver's process and whose calls take their
modeled time (solrl/standin/timing.py) on a clock that jumps from one finish to the next.

A call runs the worker's method at once, in the order calls are made to that worker (as an actor
runs them), and its result becomes ready at max(now, when the worker is free, when its inputs
are ready) plus the seconds its clock modeled. `wait` and `get` move the clock to the moment
what they wait for is ready; nothing sleeps. A worker whose injected fault fires (FaultPlan,
cluster.faults) is dead from that moment: that call and every later one fail with WorkerDied,
as a SIGKILLed actor's do. `worker_cpu` is the process time spent inside the workers, so what
remains of the process's CPU time is the scheduler's.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from solrl.cluster.seam import HelperDied, WorkerDied
from solrl.standin.actors import Died, ScorerDied

READY_AT = operator.attrgetter("ready_at")


class VirtualRef:
    """A result: ready at `ready_at` (virtual seconds), holding a value or an error."""

    __slots__ = ("error", "ready_at", "value")

    def __init__(self, ready_at: float, value=None, error: BaseException | None = None):
        self.ready_at, self.value, self.error = ready_at, value, error


@dataclass(eq=False)
class VirtualWorker:
    obj: object
    free_at: float  # when the calls made so far are done
    dead_at: float | None = None
    outstanding: list[VirtualRef] = field(default_factory=list)


@dataclass(eq=False)
class Reservation:
    granted: VirtualRef

    def ready(self) -> VirtualRef:
        return self.granted


class VirtualRuntime:
    """The runtime seam (solrl.cluster.seam) on a virtual clock; workers must be stand-ins."""

    virtual = True

    def __init__(self):
        self.clock = 0.0
        self.calls = 0
        self.worker_cpu = 0.0

    def now(self) -> float:
        return self.clock

    def _run(self, fn, *args):
        start = time.process_time()
        try:
            return fn(*args)
        finally:
            self.worker_cpu += time.process_time() - start

    def spawn(self, cls: type, options: dict, *args, slot: tuple | None = None) -> VirtualWorker:
        return VirtualWorker(self._run(cls, *args), self.clock)

    def call(self, worker: VirtualWorker, method: str, *args, returns: int = 1):
        self.calls += 1
        inputs = [a for a in args if isinstance(a, VirtualRef)]
        start = max([self.clock, worker.free_at] + [a.ready_at for a in inputs])
        failed = next((a.error for a in inputs if a.error is not None), None)
        if worker.dead_at is not None:
            results = self._failed(returns, max(start, worker.dead_at), WorkerDied(f"the worker died at {worker.dead_at:.1f}s"))
        elif failed is not None:
            results = self._failed(returns, start, failed)
        else:
            clock = worker.obj.clock
            before = clock.elapsed
            values = [a.value if isinstance(a, VirtualRef) else a for a in args]
            try:
                value = self._run(getattr(worker.obj, method), *values)
                done = start + clock.elapsed - before
                results = [VirtualRef(done, v) for v in (value if returns > 1 else (value,))]
                worker.free_at = done
            except Died:
                worker.dead_at = start + clock.elapsed - before
                results = self._failed(returns, worker.dead_at, WorkerDied(f"the worker died in {method}"))
            except ScorerDied:  # the worker lives; the reward worker it asked does not
                results = self._failed(returns, start + clock.elapsed - before, HelperDied(f"the reward worker {method} asked died"))
                worker.free_at = results[0].ready_at
            except Exception as exc:  # noqa: BLE001 (the call raised: its refs hold the error, as Ray's do)
                results = self._failed(returns, start + clock.elapsed - before, exc)
                worker.free_at = results[0].ready_at
        worker.outstanding = [r for r in worker.outstanding if r.ready_at > self.clock] + results
        return tuple(results) if returns > 1 else results[0]

    @staticmethod
    def _failed(returns: int, at: float, error: BaseException) -> list[VirtualRef]:
        return [VirtualRef(at, error=error) for _ in range(returns)]

    def wait(self, refs: Sequence[VirtualRef], num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        refs = list(refs)
        if not refs:
            return [], []
        if num_returns == 1:  # the dispatcher's every wait: a scan for the first, and one copy
            first = min(refs, key=READY_AT)
            self._advance(first.ready_at, timeout)
            if first.ready_at > self.clock:
                return [], refs
            i = refs.index(first)
            return [first], refs[:i] + refs[i + 1 :]
        if timeout == 0 and num_returns >= len(refs):  # a poll (a step's ranks, workers starting): no clock to move
            ready = sorted((r for r in refs if r.ready_at <= self.clock), key=READY_AT)
            if not ready:
                return [], refs
            chosen = set(map(id, ready))
            return ready, [r for r in refs if id(r) not in chosen]
        order = sorted(refs, key=READY_AT)
        self._advance(order[min(num_returns, len(order)) - 1].ready_at, timeout)
        ready = [r for r in order if r.ready_at <= self.clock][:num_returns]
        chosen = set(map(id, ready))
        return ready, [r for r in refs if id(r) not in chosen]

    def _advance(self, target: float, timeout: float | None) -> None:
        """The clock moved to `target`, or by `timeout` if that comes first (never back)."""
        if timeout is not None:
            target = min(target, self.clock + timeout)
        self.clock = max(self.clock, target)

    def get(self, refs, timeout: float | None = None):
        many = isinstance(refs, list)
        values = []
        for ref in refs if many else [refs]:
            if timeout is not None and ref.ready_at > self.clock + timeout:
                self.clock += timeout
                raise TimeoutError(f"not ready within {timeout}s")
            self.clock = max(self.clock, ref.ready_at)
            if ref.error is not None:
                raise ref.error
            values.append(ref.value)
        return values if many else values[0]

    def put(self, value) -> VirtualRef:
        return VirtualRef(self.clock, value)

    def kill(self, worker: VirtualWorker) -> None:
        if worker.dead_at is None or worker.dead_at > self.clock:
            worker.dead_at = self.clock
        for ref in worker.outstanding:
            if ref.ready_at > self.clock:
                ref.ready_at, ref.value, ref.error = self.clock, None, WorkerDied("the worker was killed")
        worker.outstanding = []

    def reserve(self, bundles: list[dict]) -> Reservation:
        return Reservation(VirtualRef(self.clock, True))

    def rendezvous(self, reservation) -> tuple[str, int]:
        return "127.0.0.1", 0  # virtual ranks join no process group

    def release(self, reservation) -> None:
        pass

    def placed(self, workers) -> list[bool | None]:
        return [True] * len(workers)  # a virtual worker never waits for resources

    def resources(self) -> tuple[dict[str, float], dict[str, float]]:
        unbounded = {"CPU": float("inf"), "GPU": float("inf"), "memory": float("inf")}
        return unbounded, unbounded
