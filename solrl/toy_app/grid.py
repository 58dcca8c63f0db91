"""Captioned sample grids: one row per caption, one column per fixed seed. Shapes captions are
framed green (strict pass) or red (fail) by the detector; `before_after` puts two grids of the
same captions and seeds side by side (a run's base model and its trained policy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from solrl.models.base import Sampleable
from solrl.sampling import SamplingConfig
from solrl.sampling.eval_images import eval_seeds, generate
from solrl.toy.captions import CaptionError, parse_caption
from solrl.toy.detector import judge

TILE, BORDER, LABEL_H, GUTTER = 96, 2, 14, 12  # a 32 px image drawn 3x, pixels kept sharp


def pick_rows(prompts: Sequence[str], rows: int) -> list[str]:
    """Up to `rows` captions: one of each shapes task first (in order of appearance), then the rest."""
    seen, first = set(), []
    for p in prompts:
        try:
            task = parse_caption(p).task
        except CaptionError:
            break
        if task not in seen:
            seen.add(task)
            first.append(p)
    return (first + [p for p in prompts if p not in first])[:rows]


def sample_grid(
    model: Sampleable,
    captions: Sequence[str],
    per_caption: int = 6,
    sampling: SamplingConfig | None = None,
    seed: int = 1234,
    framed: bool = True,
) -> Image.Image:
    """Render the grid as a PIL image; `framed` judges shapes captions (green pass, red fail)."""
    sampling = sampling or SamplingConfig(steps=10, solver="euler")
    pairs = [(c, s) for c, seeds in zip(captions, eval_seeds(seed, len(captions), per_caption)) for s in seeds]
    images, _ = generate(model, pairs, sampling)
    passed = judge(images, [c for c, _ in pairs])[1] if framed else None
    size = TILE + 2 * BORDER
    resample = Image.NEAREST if images.shape[-1] <= TILE else Image.BILINEAR
    canvas = Image.new("RGB", (per_caption * size, len(captions) * (size + LABEL_H)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, caption in enumerate(captions):
        top = i * (size + LABEL_H)
        draw.text((2, top + 1), caption[:60], fill="black", font=font)
        for j in range(per_caption):
            k = i * per_caption + j
            pixels = (images[k].float().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            tile = Image.fromarray(pixels).resize((TILE, TILE), resample)
            left = j * size
            frame = "white" if passed is None else ("green" if passed[k] else "red")
            draw.rectangle([left, top + LABEL_H, left + size - 1, top + LABEL_H + size - 1], fill=frame)
            canvas.paste(tile, (left + BORDER, top + LABEL_H + BORDER))
    return canvas


def before_after(before: Image.Image, after: Image.Image, titles: tuple[str, str] = ("base model", "after training (EMA)")) -> Image.Image:
    """Two grids side by side under their titles."""
    width, height = before.width + GUTTER + after.width, max(before.height, after.height) + LABEL_H
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for x, title, grid in ((0, titles[0], before), (before.width + GUTTER, titles[1], after)):
        draw.text((x + 2, 1), title, fill="black", font=ImageFont.load_default())
        canvas.paste(grid, (x, LABEL_H))
    return canvas


@torch.no_grad()
def grid_for(model: Sampleable, prompts: Sequence[str], sampling: SamplingConfig, seed: int, rows: int = 8, per_caption: int = 6, framed: bool = True) -> Image.Image:
    """The grid a run draws of its eval prompts: `rows` captions (one per task first), fixed seeds."""
    return sample_grid(model, pick_rows(prompts, rows), per_caption, sampling, seed, framed)
