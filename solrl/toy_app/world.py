"""The shapes world as a run's world (solrl.world.World): the shipped captions (or a caption
file), task strata, GenEval-style accuracy by the detector with the size preference, the base
model's best-of-m preference, and the share of that headroom a trained policy closes."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from solrl.models.base import Sampleable
from solrl.sampling import SamplingConfig
from solrl.sampling.eval_images import Pairs
from solrl.toy.captions import SHIPPED, load_prompts, parse_caption
from solrl.toy_app.evaluate import accuracy_change, gap_closed, measure, summarize


class ShapesWorld:
    name, best_of, framed_grid = "shapes", True, True

    def check(self, config) -> None:
        pass  # every setting runs; captions are validated as they load

    def load_prompts(self, name: str) -> list[str]:
        if name not in SHIPPED and not pathlib.Path(name).is_file():
            raise FileNotFoundError(f"{name!r} is neither {', '.join(map(repr, SHIPPED))} nor a caption file; pass one of those")
        captions = load_prompts(name)
        if not captions:
            raise ValueError(f"caption file {name!r} holds no captions; write one caption per line")
        return captions

    def strata(self, prompts: Sequence[str]) -> list[str]:
        return [parse_caption(p).task for p in prompts]

    def measure(self, model: Sampleable, pairs: Pairs, sampling: SamplingConfig, reward) -> dict[str, np.ndarray]:
        return measure(model, pairs, sampling, reward=reward)  # the detector's verdicts, and the run's own reward

    def summarize(self, pairs: Pairs, measures: dict[str, np.ndarray], n: int, best_of: int) -> dict:
        return {"metric": "accuracy", **summarize(pairs, measures, n, best_of)}

    def compare(self, base: dict, final: dict, final_policy: dict) -> dict:
        if "best_of" not in base:
            return {}
        change, se = accuracy_change(base, final)
        return {
            "preference_gap_closed": gap_closed(base, final),
            "preference_gap_closed_policy": gap_closed(base, final_policy),
            "accuracy_change": change,
            "accuracy_change_se": se,
        }
