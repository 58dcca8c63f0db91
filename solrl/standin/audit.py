"""The explore audit's calls on a stand-in sampler (rollout.precision_control;
solrl.cluster.audit_desk), as solrl/cluster/sampler_actor.py has them: a preview's noise shrinks as
its precision rises (solrl.standin.payloads.NOISE_BY_PRECISION), an audit regeneration costs what a
regeneration of as many seeds does."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from solrl.standin.payloads import reward
from solrl.types import Preview, Selection


class StandInAudit:
    """Mixed into StandInSampler, which has the clock, payloads, sampling and precision it uses."""

    def set_explore_precision(self, precision: str) -> str:
        self.precision = precision
        return precision

    def _preview(self, previews: Sequence[Preview]) -> tuple[Preview, float]:
        (work,) = previews
        start = self.clock.now()
        self.clock.sample(len(work.seeds), self.sampling, work.precision)
        return work, start

    def preview(self, previews: Sequence[Preview]) -> dict:
        self.faults.reached("preview")
        work, start = self._preview(previews)
        if self.scores:
            self.clock.reward(len(work.seeds))
        rewards = [reward(work.prompt, s, proxy=True, precision=work.precision) for s in work.seeds]
        return self._report(start) | {"rewards": rewards, "precision": work.precision}

    def preview_images(self, previews: Sequence[Preview]) -> tuple[torch.Tensor, dict]:
        self.faults.reached("preview")
        work, start = self._preview(previews)
        images = self.payloads.images(len(work.seeds))
        return images, self._report(start) | {"bytes": {"images": images.nbytes}, "precision": work.precision}

    def audit(self, selections: Sequence[Selection]) -> dict:
        self.faults.reached("audit")
        start, (selection,) = self.clock.now(), selections
        self._draw(len(selection.seeds))
        return self._report(start) | {"rewards": [[reward(selection.prompt, s) for s in selection.seeds]]}

    def audit_images(self, selections: Sequence[Selection]) -> tuple[torch.Tensor, dict]:
        self.faults.reached("audit")
        start, (selection,) = self.clock.now(), selections
        self.clock.sample(len(selection.seeds), self.sampling, self.precision)
        images = self.payloads.images(len(selection.seeds))
        return images, self._report(start) | {"bytes": {"images": images.nbytes}}
