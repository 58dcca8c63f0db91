"""Explore precision chosen online from measured fidelity (rollout.precision_control).

The selector trusts the explore previews' ranking of a group's seeds. How well they rank is
measured on an audit sample: `audit` seeds of every group drawn at random, whatever the selector
chose, whose BF16 rewards the run also obtains (the selected ones are regenerated anyway; the
others only for the audit, never trained on). The figure is Spearman's rho between the previews'
and the BF16 rewards on those seeds, averaged over groups. Measured on the selected seeds alone
it is inflated: best/worst selection keeps the seeds the previews put furthest apart.

While explore runs above the ladder's cheapest rung, the audit seeds are also previewed at the next
cheaper rung, so the run knows when that rung ranks well again; and while agreement has been poor
for a while, at the next safer rung, so the run knows whether moving there would help.

A rung is a precision, or a precision at a step count ('fp8_e4m3@10'): on a policy that has
drifted, few-step previews rank poorly at any precision, and only more steps help.

PrecisionController turns the figures into moves along the ladder (cheapest first, e.g. NVFP4 ->
FP8 -> BF16): `patience` iterations in a row with the current rung's agreement below `floor` move
explore one rung safer, once the safer rung has ranked the same audit seeds measurably better
(`gain`: a run whose policy has drifted ranks poorly at every precision, and a move would only
cost); `recover_patience` iterations in a row with the cheaper rung's agreement at or above
`recover` (above `floor`: hysteresis, so it does not flap) move it back. With `window` > 1 each
figure is first averaged with the audits before it (a running mean), so sparse audits react to a
sustained fall. Pure: no torch, no Ray; the engines run the audit and apply the moves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from solrl.stats import finite_mean, spearman


class PrecisionControl(BaseModel):
    """Explore precision chosen online from the audited agreement of previews with BF16."""

    model_config = ConfigDict(extra="forbid")
    ladder: list[str] = Field(
        default_factory=lambda: ["nvfp4", "fp8_e4m3@regen", "bf16@regen"],
        description="Explore settings (rungs), cheapest first: a precision ('nvfp4': at rollout.explore's step count) or a precision "
        "at a step count ('fp8_e4m3@10': FP8 previews in 10 steps; '@regen': at rollout.regenerate's, written out when the config "
        "loads). The safer rungs preview at the regeneration's step count because on a drifted policy the step gap, not the "
        "precision, is what ranks seeds poorly (docs/method.md).",
    )
    floor: float = Field(default=0.5, ge=-1, le=1, description="Audited Spearman below which an iteration counts as poor.")
    patience: int = Field(default=3, ge=1, description="Poor iterations in a row before explore moves one rung safer.")
    recover: float = Field(default=0.7, ge=-1, le=1, description="The cheaper rung's audited Spearman at or above which an iteration counts toward moving back.")
    recover_patience: int = Field(default=5, ge=1, description="Such iterations in a row before explore moves back one rung cheaper.")
    audit: int = Field(default=4, ge=2, description="Seeds per prompt group drawn at random for the audit (BF16 rewards obtained for each).")
    every: int = Field(
        default=1,
        ge=1,
        description="Audit every this many iterations (0, every, 2 x every, ...); the others explore on unaudited and count neither "
        "way. At the shapes defaults an audit costs about 7 % of an iteration (its BF16 regenerations), so `every` divides that.",
    )
    window: int = Field(
        default=1,
        ge=1,
        description="Audited iterations whose agreement is averaged before it is compared with floor (and the cheaper rung's "
        "with recover): a running mean, so a sparse audit (`every` > 1) reacts to a sustained fall instead of waiting for "
        "several noisy audits in a row each to fall below floor. 1: each audit on its own.",
    )
    sentinel: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="Audit at the ladder's cheapest rung only while the selected seeds' preview Spearman (free: the run "
        "regenerates them to train), averaged over the last sentinel_window iterations, is below this; above the cheapest "
        "rung every scheduled iteration is audited. Selection inflates that figure, so it only schedules audits; moves are "
        "decided on the audit (solrl/audit_schedule.py). null: audit every scheduled iteration.",
    )
    sentinel_window: int = Field(default=4, ge=1, description="Iterations whose selected-seed Spearman the sentinel averages.")
    in_batch: bool = Field(
        default=False,
        description="The audit seeds take training slots: an audited group's selection keeps its audit seeds and selection.mode "
        "fills the other k - audit slots, so the audit regenerates nothing for itself (its price: a less contrastive batch on "
        "audited iterations). Whether an iteration is audited is then decided before it is selected, from the sentinel's "
        "figures through iteration - 1 - rollout.max_policy_lag, and the sentinel's figure leaves the audit seeds out "
        "(solrl/audit_schedule.py). Needs audit <= selection.k.",
    )
    gain: float | None = Field(
        default=0.0,
        ge=-2,
        le=2,
        description="A move safer also needs the safer rung to rank the poor iterations' audit seeds better: the lower end of "
        "the paired Spearman gain's interval (mean - 2 s.e. over the groups, safer minus current on the same seeds) "
        "above this. The audit previews at the safer rung from the (patience-1)th poor iteration in a row. null: move on "
        "the floor alone.",
    )

    @model_validator(mode="after")
    def _sane(self) -> PrecisionControl:
        if len(set(self.ladder)) != len(self.ladder) or not self.ladder:
            raise ValueError(f"rollout.precision_control.ladder={self.ladder} needs distinct precisions, cheapest first, e.g. [nvfp4, fp8_e4m3, bf16]")
        if self.recover < self.floor:
            raise ValueError(
                f"rollout.precision_control.recover={self.recover} is below floor={self.floor}; set recover >= floor so a rung that just "
                "failed is not taken back at once"
            )
        for rung in self.ladder:
            if not re.fullmatch(r"[a-z0-9_]+(@[1-9][0-9]*|@regen)?", rung):
                raise ValueError(
                    f"rollout.precision_control.ladder has rung {rung!r}; write a precision, or one at a step count, e.g. nvfp4, "
                    "fp8_e4m3@10 or bf16@regen"
                )
        return self

    def at_regen_steps(self, steps: int) -> PrecisionControl:
        """This control with each '@regen' rung written out at the regeneration's step count."""
        return self.model_copy(update={"ladder": [r.replace("@regen", f"@{steps}") if r.endswith("@regen") else r for r in self.ladder]})

    def audits(self, iteration: int) -> bool:
        return iteration % self.every == 0

    def check(self, start: str, precisions: Sequence[str]) -> None:
        """Refuse a ladder whose rungs name an unknown precision, or that lacks the run's start."""
        for rung in self.ladder:
            if rung_parts(rung)[0] not in precisions:
                raise ValueError(f"rollout.precision_control.ladder has rung {rung!r}, whose precision is not one of {list(precisions)}; use one of them")
        if len(set(self.ladder)) != len(self.ladder):
            raise ValueError(f"rollout.precision_control.ladder={self.ladder} names a rung twice once '@regen' is written out; drop one")
        if start not in self.ladder:
            raise ValueError(f"rollout.explore_precision={start!r} is not on rollout.precision_control.ladder={self.ladder}; add it there")


def rung_parts(rung: str) -> tuple[str, int | None]:
    """A rung's precision and explore step count (None: rollout.explore's own)."""
    precision, _, steps = rung.partition("@")
    return precision, int(steps) if steps else None


@dataclass(frozen=True)
class Switch:
    """A move along the ladder, with the figures that caused it."""

    iteration: int
    source: str
    target: str
    reason: str


def audit_seeds(seeds: Sequence[int], n: int, key: Sequence[int]) -> tuple[int, ...]:
    """`n` of a group's seeds drawn at random (independent of any selection), reproducibly from
    `key` (e.g. run seed, iteration, prompt id), in the group's seed order."""
    rng = np.random.default_rng([abs(int(k)) for k in key])
    chosen = set(rng.choice(len(seeds), size=min(n, len(seeds)), replace=False).tolist())
    return tuple(s for i, s in enumerate(seeds) if i in chosen)


def paired_gains(current: Sequence[Sequence[float]], safer: Sequence[Sequence[float]], bf16: Sequence[Sequence[float]]) -> list[float]:
    """Per group, how much better the safer rung's previews rank the audit seeds than the current
    rung's did (Spearman against the same BF16 rewards), where both are defined; rounded as the
    metrics rows log them, so a replay of the rows makes the same moves."""
    gains = [spearman(s, b) - spearman(c, b) for c, s, b in zip(current, safer, bf16, strict=True)]
    return [round(g, 4) for g in gains if math.isfinite(g)]


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (infinite below two values)."""
    a = np.asarray(values, dtype=np.float64)
    return (float(a.mean()) if len(a) else math.nan), (float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else math.inf)


def audit_agreement(previews: Sequence[Sequence[float]], bf16: Sequence[Sequence[float]]) -> float:
    """Spearman's rho of each group's audit previews against their BF16 rewards, averaged over the
    groups where it is defined (NaN when it is nowhere)."""
    return finite_mean([spearman(p, b) for p, b in zip(previews, bf16, strict=True)])


def probe_figures(control: PrecisionController, probed: dict[str, Sequence[Sequence[float]]], previews, bf16) -> dict:
    """A row's figures for the audit seeds previewed at other rungs (`probed`: rung -> each
    group's previews), beside the current rung's `previews` of the same groups."""
    figures = {}
    if control.cheaper in probed:
        figures |= {"cheaper": control.cheaper, "cheaper_spearman": audit_agreement(probed[control.cheaper], bf16)}
    if control.safer in probed:
        gains = paired_gains(previews, probed[control.safer], bf16)
        figures |= {"safer": control.safer, "safer_spearman": audit_agreement(probed[control.safer], bf16), "safer_gains": gains}
    return figures


class PrecisionController:
    def __init__(self, config: PrecisionControl, start: str):
        if start not in config.ladder:
            raise ValueError(f"rollout.explore_precision={start!r} is not on rollout.precision_control.ladder={config.ladder}; add it there")
        self.config, self.level = config, config.ladder.index(start)
        self.poor = self.good = 0  # iterations in a row below floor / with the cheaper rung at or above recover
        self.gains: list[float] = []  # the safer rung's paired gains over the current poor streak
        self.recent: list[float] = []  # the current rung's last `window` audited agreements
        self.recent_cheaper: list[float] = []  # the cheaper rung's

    @property
    def precision(self) -> str:
        return self.config.ladder[self.level]

    @property
    def cheaper(self) -> str | None:
        """The rung below the current one, whose agreement the audit also measures; None at the bottom."""
        return self.config.ladder[self.level - 1] if self.level > 0 else None

    @property
    def safer(self) -> str | None:
        """The rung above the current one; None at the top."""
        return self.config.ladder[self.level + 1] if self.level + 1 < len(self.config.ladder) else None

    def probes(self, precision: str) -> tuple[str, ...]:
        """The rungs at which the audit previews the seeds of a group explored at `precision`: the
        one below (toward moving back), and, for the current rung while agreement has been poor
        long enough that a move may be near, the one above (toward moving safer)."""
        ladder = self.config.ladder
        if precision not in ladder:  # a group whose slices ran at two precisions
            return ()
        at = ladder.index(precision)
        below = (ladder[at - 1],) if at > 0 else ()
        near = self.config.gain is not None and self.safer is not None and self.poor >= max(1, self.config.patience - 1)
        return below + ((self.safer,) if near and at == self.level else ())

    def observe(self, iteration: int, agreement: float, cheaper_agreement: float | None = None, safer_gains: Sequence[float] = ()) -> Switch | None:
        """One iteration's audited agreement (of the current rung, and of the cheaper one when
        there is one) and the safer rung's paired gains (when it was previewed); returns the move
        it causes, if any. An undefined figure (NaN: every audited group's rewards tied) counts
        neither way."""
        c = self.config
        level = self._running(self.recent, agreement)
        if level is not None:
            self.poor = self.poor + 1 if level < c.floor else 0
        if self.poor:
            self.gains.extend(safer_gains)
        else:
            self.gains.clear()
        cheaper_level = self._running(self.recent_cheaper, cheaper_agreement)
        if cheaper_level is not None:
            self.good = self.good + 1 if cheaper_level >= c.recover else 0
        if self.poor >= c.patience and self.safer is not None:
            reason = f"audited Spearman below floor {c.floor:g} for {self.poor} iterations ({self._last(self.recent)})"
            if c.gain is None:
                return self._move(iteration, +1, reason)
            mean, se = interval(self.gains)
            if mean - 2 * se > c.gain:  # strictly: gains of exactly 0 (same ranks) have no spread, and are no gain
                return self._move(iteration, +1, f"{reason}; {self.safer} ranks the same seeds better by {mean:.3f} ± {se:.3f} ({len(self.gains)} groups)")
        if self.cheaper is not None and self.good >= c.recover_patience:
            reason = f"{self.cheaper}'s audited Spearman at or above {c.recover:g} for {self.good} iterations ({self._last(self.recent_cheaper)})"
            return self._move(iteration, -1, reason)
        return None

    def _running(self, recent: list[float], figure: float | None) -> float | None:
        """The running mean with this audit's figure in it; None (counts neither way) when it is undefined."""
        if figure is None or math.isnan(figure):
            return None
        recent.append(figure)
        del recent[: -self.config.window]
        return sum(recent) / len(recent)

    def _last(self, recent: list[float]) -> str:
        if self.config.window == 1:
            return f"last {recent[-1]:.3f}"
        return f"mean of the last {len(recent)} audits {sum(recent) / len(recent):.3f}"

    def _move(self, iteration: int, step: int, reason: str) -> Switch:
        source = self.precision
        self.level += step
        self.poor = self.good = 0
        for figures in (self.gains, self.recent, self.recent_cheaper):  # the rungs' figures start afresh at the new level
            figures.clear()
        return Switch(iteration, source, self.precision, reason)

    def state(self) -> dict:
        return {"level": self.level, "poor": self.poor, "good": self.good, "gains": list(self.gains), "recent": list(self.recent), "recent_cheaper": list(self.recent_cheaper)}

    def load_state(self, state: dict) -> None:
        self.level, self.poor, self.good = state["level"], state["poor"], state["good"]
        self.gains = list(state.get("gains", []))  # a checkpoint from before `gain` has none
        self.recent, self.recent_cheaper = list(state.get("recent", [])), list(state.get("recent_cheaper", []))
