"""Shapes detector cost: milliseconds per image on renders of the eval captions (the RL case),
and seconds for 512 x 512 worst cases (the reward service's bound on the work one image causes).

    python benchmarks/detector_bench.py [--renders 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random

import torch

from common import append_results, median_seconds, table
from solrl.toy.captions import COLORS, load_prompts, parse_caption
from solrl.toy.detector import detect, judge
from solrl.toy.render import render_batch


def worst_cases(side: int = 512) -> dict[str, torch.Tensor]:
    """Images built to make the detector work: many tiny objects, many coloured parts, noise."""
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(side)
    dots = torch.zeros(3, side, side)
    dots[:, (idx % 3) < 2, :] = 1.0
    dots[:, :, (idx % 3) == 2] = 0.0
    checker = ((idx.view(-1, 1) + idx.view(1, -1)) % 2).float().expand(3, side, side).clone()
    palette = torch.tensor(list(COLORS.values()))  # 6 x 3
    stripes = torch.zeros(3, side, side)  # 24 blobs of 34 px, each striped in four colours (four parts each)
    for k in range(24):
        y, x = 40 * (k // 6) + 4, 80 * (k % 6) + 4
        for j in range(34):
            stripes[:, y + j, x : x + 34] = palette[j % 4].view(3, 1)
    return {
        "2x2 dots, 1 px apart": dots,
        "1 px checkerboard": checker,
        "uniform noise": torch.rand(3, side, side, generator=g),
        "24 blobs striped in 4 colours": stripes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    captions = [rng.choice(load_prompts("eval")) for _ in range(args.renders)]
    images = render_batch([parse_caption(c) for c in captions], 0)
    per_image = median_seconds(lambda: judge(images, captions), args.repeats) / args.renders
    rows = [[f"{args.renders} renders of eval captions, 32 x 32", "-", f"{1e3 * per_image:.2f} ms per image"]]
    for name, image in worst_cases().items():
        batch = image.unsqueeze(0)
        seconds = median_seconds(lambda b=batch: judge(b, ["a red circle"]), args.repeats)
        rows.append([f"{name}, 512 x 512", len(detect(batch)[0]), f"{seconds:.3f} s"])
    append_results(
        "Shapes detector cost",
        table(["input", "objects counted", "time"], rows),
        f"median of {args.repeats}; judge() = detection + caption score + size preference; one process, torch threads as set",
    )


if __name__ == "__main__":
    main()
