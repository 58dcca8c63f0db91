"""The shapes world's rewards, from its detector (solrl.toy.detector):

- `shapes`: the caption score in [0, 1], GenEval-style partial credit (objects, colours, relation, count);
- `shapes_strict`: 1 when every constraint of the caption holds, else 0 (what the eval counts);
- `shapes_size`: a prompt-agnostic preference in [0, 1] for bigger objects within the renderer's
  range, the shapes world's stand-in for the preference rewards (PickScore, HPS) users train on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from solrl.toy.detector import judge

Kind = Literal["shapes", "shapes_strict", "shapes_size"]
SHAPES_REWARDS: tuple[Kind, ...] = ("shapes", "shapes_strict", "shapes_size")


class ShapesJudge:
    """The detector's verdicts on a batch, remembered for the last batch it saw, so that several
    shapes rewards of one weighted sum run the detector once."""

    def __init__(self):
        self._last: tuple[torch.Tensor, list[str], dict[str, torch.Tensor]] | None = None

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        prompts = list(prompts)
        if self._last is not None and self._last[0] is images and self._last[1] == prompts:
            return self._last[2]
        score, passed, size = judge(images, prompts)
        verdicts = {"shapes": score, "shapes_strict": passed.float(), "shapes_size": size}
        self._last = (images, prompts, verdicts)
        return verdicts


class ShapesReward:
    """Batched shapes reward for (image, caption) pairs: the caption score, the strict pass flag
    as 0 / 1, or the size preference, by `kind`."""

    def __init__(self, kind: Kind = "shapes", judge: ShapesJudge | None = None):
        if kind not in SHAPES_REWARDS:
            raise ValueError(f"shapes reward kind {kind!r} is unknown; choose one of {list(SHAPES_REWARDS)}")
        self.name = self.kind = kind
        self.judge = judge or ShapesJudge()

    def evaluate(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(caption scores (B,), strict pass (B,) bool) for images in [0, 1] and their captions."""
        verdicts = self.judge(images, prompts)
        return verdicts["shapes"], verdicts["shapes_strict"].bool()

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.judge(images, prompts)[self.kind]
