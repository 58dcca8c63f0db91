"""Draw a Spec: coloured shapes on black, anti-aliased by 4x supersampling, with random sizes and
placements that satisfy the caption (objects never touch; relations hold with a clear margin)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points of box-normalised coordinates (u, v in [0, 1] inside the box) lie in `shape`."""
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    if shape == "square":
        return inside
    if shape == "triangle":  # apex at the top centre, base along the bottom
        return inside & (np.abs(u - 0.5) <= v / 2)
    raise ValueError(f"unknown shape {shape!r}")


def coverage(
    shape: str | Callable[[np.ndarray, np.ndarray], np.ndarray],
    box: tuple[float, float, float],
    size: int = SIZE,
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Fraction of each pixel the shape in `box` (x, y, side) covers, from SUPERSAMPLE^2 points per
    pixel; over the whole canvas, or over `window` (x0, y0, width, height) in pixels. `shape` is a
    shape's name or a mask function of box-normalised (u, v), as shape_mask is."""
    x0, y0, w, h = window or (0, 0, size, size)
    px = x0 + (np.arange(w * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    py = y0 + (np.arange(h * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    x, y, side = box
    u, v = ((px - x) / side)[None, :], ((py - y) / side)[:, None]
    mask = shape_mask(shape, u, v) if isinstance(shape, str) else shape(u, v)
    return mask.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))


def render(spec: Spec, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One image (3, size, size) in [0, 1] that satisfies `spec`; unspecified colours are random."""
    image = np.zeros((3, size, size), dtype=np.float32)
    names = list(COLORS)
    for obj, box in zip(spec.objects, _place(spec, rng, size)):
        color = np.asarray(COLORS[obj.color or names[rng.integers(len(names))]], dtype=np.float32)
        alpha = coverage(obj.shape, box, size)[None].astype(np.float32)
        image = image * (1 - alpha) + alpha * color[:, None, None]
    return image


def render_batch(specs: Sequence[Spec], seed: int | np.random.Generator = 0, size: int = SIZE) -> torch.Tensor:
    """Images (B, 3, size, size) in [0, 1] for `specs`, reproducible from `seed`."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return torch.from_numpy(np.stack([render(s, rng, size) for s in specs])) if specs else torch.empty(0, 3, size, size)
