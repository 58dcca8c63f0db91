"""A captioned sample grid: one row per caption, one column per seed, each image framed green
(strict pass) or red (fail) by the shapes reward."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from solrl.models.base import Sampleable
from solrl.rewards.shapes import ShapesReward
from solrl.sampling import SamplingConfig, sample
from solrl.toy.evaluate import eval_seeds

SCALE, BORDER, LABEL_H = 3, 2, 14


def sample_grid(
    model: Sampleable, captions: Sequence[str], per_caption: int = 6, sampling: SamplingConfig | None = None, seed: int = 1234
) -> Image.Image:
    """Render the grid as a PIL image."""
    sampling = sampling or SamplingConfig(steps=10, solver="euler")
    seeds = eval_seeds(seed, len(captions), per_caption)
    flat_caps = [c for c in captions for _ in range(per_caption)]
    flat_seeds = [s for row in seeds for s in row]
    with torch.no_grad():
        images = model.decode(sample(model, model.encode_prompts(flat_caps), flat_seeds, sampling))
    _, passed = ShapesReward().evaluate(images, flat_caps)
    size = images.shape[-1] * SCALE + 2 * BORDER
    canvas = Image.new("RGB", (per_caption * size, len(captions) * (size + LABEL_H)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, caption in enumerate(captions):
        top = i * (size + LABEL_H)
        draw.text((2, top + 1), caption, fill="black", font=font)
        for j in range(per_caption):
            k = i * per_caption + j
            pixels = (images[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            tile = Image.fromarray(pixels).resize((size - 2 * BORDER,) * 2, Image.NEAREST)
            left = j * size
            draw.rectangle([left, top + LABEL_H, left + size - 1, top + LABEL_H + size - 1], fill="green" if passed[k] else "red")
            canvas.paste(tile, (left + BORDER, top + LABEL_H + BORDER))
    return canvas
