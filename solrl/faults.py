"""Deterministic fault injection: a named worker kills itself at a known point of its K-th task.

Fault tests must not race a timer against the work. `cluster.faults` lists points such as
"rollout-0:explore:2" (the worker rollout-0 dies as its second explore task starts) or
"learner-1:backward:1" (learner rank 1 dies inside its first backward pass); "driver-0" is the
distributed run's driver process itself. Workers read the
list when they start; the process is SIGKILLed, exactly as an out-of-memory kill or a lost node
would end it, so the recovery paths under test are the real ones. Replacement workers get new
names (and a restarted learner group is not armed), so each fault fires once.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

# where each kind of worker can be stopped
POINTS = {
    "sampler": ("explore", "explore_images", "regenerate", "regenerate_images", "apply_update", "measure", "grid", "preview", "audit"),
    "reward": ("score", "label", "score_eval"),  # score_eval: an eval's images, scored for a sampler that holds no reward
    "learner": ("step", "backward", "publish"),
    "driver": ("row", "checkpoint"),  # driver-0: before an iteration's metrics row / its checkpoint
}
_SPEC = re.compile(r"^(?P<worker>[a-z]+-\d+):(?P<point>[a-z_]+):(?P<nth>[1-9]\d*)$")


@dataclass(frozen=True)
class Fault:
    worker: str
    point: str
    nth: int


def parse_fault(spec: str) -> Fault:
    """'WORKER:POINT:K' as a Fault; ValueError naming the spec and the expected form."""
    m = _SPEC.match(spec)
    points = sorted({p for ps in POINTS.values() for p in ps})
    if m is None or m["point"] not in points:
        raise ValueError(f"cluster.faults entry {spec!r} is not WORKER:POINT:K (e.g. 'rollout-0:explore:2'); POINT is one of {points}")
    return Fault(m["worker"], m["point"], int(m["nth"]))


class FaultPlan:
    """The faults armed for one worker; `reached(point)` counts and kills on the K-th time
    (`kill`: how; SIGKILL of this process unless given)."""

    def __init__(self, specs: list[str], worker: str, armed: bool = True, kill: Callable[[], None] | None = None):
        self.armed = {f.point: f.nth for f in map(parse_fault, specs) if f.worker == worker} if armed else {}
        self.counts: Counter[str] = Counter()
        self.kill = kill or (lambda: os.kill(os.getpid(), signal.SIGKILL))

    def reached(self, point: str) -> None:
        if point not in self.armed:
            return
        self.counts[point] += 1
        if self.counts[point] == self.armed[point]:
            self.kill()
