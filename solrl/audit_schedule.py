"""Which iterations the explore audit checks (rollout.precision_control.every and .sentinel).

The audit costs BF16 regenerations made for it alone; on a run whose previews rank well it buys
nothing. The run already has a free figure of the previews' ranking: their Spearman against the
BF16 rewards of the seeds it selected and regenerated to train on. Selection inflates it (best and
worst seeds are the ones the previews put furthest apart), so it never decides a move, but it falls
when the unbiased figure falls (on the hour-long strict run: 0.66-0.68 a 20-iteration mean while the
policy held, 0.57 then 0.51 as it drifted). With `sentinel` set, an iteration at the ladder's
cheapest rung is audited only while the running mean of that free figure over the last
`sentinel_window` iterations is below `sentinel`; above the cheapest rung every scheduled iteration is
audited, since moving back needs the cheaper rung's measured agreement.

The decision for an iteration uses only the free figures of it and the iterations before it and the
rung it was explored at, so both engines decide alike whatever order their work finishes in. With
`in_batch` the audit seeds are selected to train on, so the decision comes before the selection: it
uses the figures through iteration - 1 - rollout.max_policy_lag, the newest the distributed run is
sure to hold when an iteration's first group is selected (it queues iteration i only once the step
of i - 1 - lag has trained). Its free figure then leaves the audit seeds out, so random seeds do
not pull it down and keep the audits going. Pure: no torch, no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from solrl.precision_control import PrecisionControl
from solrl.stats import spearman


def free_figure(seeds: Sequence[int], previews: Sequence[float], bf16: Sequence[float], leave_out: Collection[int] = ()) -> float:
    """A selected group's free figure: its seeds' preview Spearman against their BF16 rewards,
    leaving out `leave_out` (the seeds an in-batch audit put in its selection)."""
    kept = [i for i, s in enumerate(seeds) if s not in leave_out]
    return spearman([previews[i] for i in kept], [bf16[i] for i in kept])


class AuditSchedule:
    def __init__(self, config: PrecisionControl, lag: int = 0):
        self.config, self.lag = config, lag  # lag: rollout.max_policy_lag
        self.free: dict[int, float] = {}  # iteration -> the selected seeds' preview Spearman (NaN: undefined)

    def record(self, iteration: int, figure: float) -> None:
        """The free figure of `iteration` (every iteration's, audited or not)."""
        self.free[iteration] = figure
        for old in [i for i in self.free if i <= iteration - self.config.sentinel_window - 64]:  # kept a while: a checkpoint may be older
            del self.free[old]

    def running(self, iteration: int) -> float:
        """The mean of the defined free figures over the window ending at `iteration` (NaN: none)."""
        window = range(iteration - self.config.sentinel_window + 1, iteration + 1)
        figures = [self.free[i] for i in window if i in self.free and math.isfinite(self.free[i])]
        return sum(figures) / len(figures) if figures else math.nan

    def level(self, iteration: int) -> float:
        """The sentinel's figure that decides `iteration` (NaN: none)."""
        return self.running(iteration - 1 - self.lag if self.config.in_batch else iteration)

    def audits(self, iteration: int, rung: str | None) -> bool:
        """Whether `iteration`, explored at `rung` (None: at two), is audited; its free figure is
        recorded first, unless in_batch (decided before its selection)."""
        c = self.config
        if not c.audits(iteration):
            return False
        if c.sentinel is None or rung != c.ladder[0]:
            return True
        level = self.level(iteration)
        return math.isnan(level) or level < c.sentinel  # no defined figure: nothing says the previews rank well

    def figures(self, iteration: int) -> dict[str, float | None]:
        """The row's figures: the sentinel's that decided `iteration` and, with in_batch, the free
        figure it recorded (None: undefined)."""
        c, out = self.config, {}
        if c.sentinel is not None:
            out["sentinel"] = self.level(iteration)
        if c.in_batch:
            out["free"] = self.free.get(iteration, math.nan)
        return {k: round(v, 4) if math.isfinite(v) else None for k, v in out.items()}

    def state(self, through: int) -> dict[str, float]:
        """The figures a run resumed after `through` needs (JSON keys are strings): with in_batch,
        its next iterations are decided from windows that end up to `lag` iterations back."""
        return {str(i): f for i, f in self.free.items() if through - self.config.sentinel_window - self.lag < i <= through}

    def load_state(self, state: dict[str, float]) -> None:
        self.free = {int(i): f for i, f in state.items()}
