"""Draw a Spec: coloured shapes on black, anti-aliased by 4x supersampling, with random sizes and
placements that satisfy the caption (objects never touch; relations hold with a clear margin)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from solrl.toy.captions import COLORS, Spec

SIZE = 32
SUPERSAMPLE = 4
GAP = 2.0  # minimum empty pixels between two objects' boxes
RELATION_MARGIN = 6.0  # centres differ by at least this along the relation's axis
ALIGNMENT = 2.0  # ... and by at most this along the other axis, so only the named relation holds


def _relation_holds(a: tuple, b: tuple, relation: str) -> bool:
    (ax, ay), (bx, by) = (a[0] + a[2] / 2, a[1] + a[2] / 2), (b[0] + b[2] / 2, b[1] + b[2] / 2)
    along, across = {
        "left of": (bx - ax, by - ay),
        "right of": (ax - bx, by - ay),
        "above": (by - ay, bx - ax),
        "below": (ay - by, bx - ax),
    }[relation]
    return along >= RELATION_MARGIN and abs(across) <= ALIGNMENT


def _place(spec: Spec, rng: np.random.Generator, size: int) -> list[tuple[float, float, float]]:
    """(x, y, side) boxes, one per object, non-overlapping and satisfying the relation."""
    n = len(spec.objects)
    lo, hi = (8.0, 13.0) if n <= 2 else (7.0, 10.0)
    for _ in range(10_000):
        boxes: list[tuple[float, float, float]] = []
        for _ in range(n):
            side = rng.uniform(lo, hi)
            x, y = rng.uniform(1.0, size - 1.0 - side, size=2)
            if all(
                x + side + GAP <= bx or bx + bs + GAP <= x or y + side + GAP <= by or by + bs + GAP <= y
                for bx, by, bs in boxes
            ):
                boxes.append((float(x), float(y), float(side)))
            else:
                break
        if len(boxes) == n and (spec.relation is None or _relation_holds(boxes[0], boxes[1], spec.relation)):
            return boxes
    raise RuntimeError(f"could not place {spec} on a {size}x{size} canvas")


def _coverage(shape: str, box: tuple[float, float, float], size: int) -> np.ndarray:
    """Fraction of each pixel the shape covers, by sampling SUPERSAMPLE^2 points per pixel."""
    fine = size * SUPERSAMPLE
    coords = (np.arange(fine) + 0.5) / SUPERSAMPLE
    px, py = np.meshgrid(coords, coords)
    x, y, side = box
    u, v = (px - x) / side, (py - y) / side  # in [0, 1] inside the box
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape == "circle":
        mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    elif shape == "square":
        mask = inside
    elif shape == "triangle":  # apex at the top centre, base along the bottom
        mask = inside & (np.abs(u - 0.5) <= v / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def render(spec: Spec, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One image (3, size, size) in [0, 1] that satisfies `spec`; unspecified colours are random."""
    image = np.zeros((3, size, size), dtype=np.float32)
    names = list(COLORS)
    for obj, box in zip(spec.objects, _place(spec, rng, size)):
        color = np.asarray(COLORS[obj.color or names[rng.integers(len(names))]], dtype=np.float32)
        alpha = _coverage(obj.shape, box, size)[None].astype(np.float32)
        image = image * (1 - alpha) + alpha * color[:, None, None]
    return image


def render_batch(specs: Sequence[Spec], seed: int | np.random.Generator = 0, size: int = SIZE) -> torch.Tensor:
    """Images (B, 3, size, size) in [0, 1] for `specs`, reproducible from `seed`."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return torch.from_numpy(np.stack([render(s, rng, size) for s in specs])) if specs else torch.empty(0, 3, size, size)
