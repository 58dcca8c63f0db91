"""A catalogue of images that try to fool the shapes detector, each with the caption it must not
pass: forms that are not the world's shapes, objects the count must not miss, and relations that
hold on the wrong axis. Drawn anti-aliased like the renderer (4 x 4 points per pixel)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from solrl.toy.captions import COLORS, parse_caption
from solrl.toy.render import coverage, render

SS = 4
Region = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (px, py) in pixels -> inside?


def _points(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size * SS) + 0.5) / SS
    return np.meshgrid(c, c)


def paint(image: np.ndarray, region: Region, colour: str | tuple[float, float, float], brightness: float = 1.0) -> np.ndarray:
    """Draw `region` over `image` (3, H, W) in a palette colour (or an RGB triple), anti-aliased."""
    size = image.shape[-1]
    px, py = _points(size)
    alpha = region(px, py).reshape(size, SS, size, SS).mean(axis=(1, 3))[None].astype(np.float32)
    rgb = np.asarray(COLORS[colour] if isinstance(colour, str) else colour, np.float32)[:, None, None] * brightness
    return image * (1 - alpha) + alpha * rgb


def box(x0: float, y0: float, x1: float, y1: float) -> Region:
    return lambda px, py: (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)


def disc(cx: float, cy: float, r: float) -> Region:
    return lambda px, py: (px - cx) ** 2 + (py - cy) ** 2 <= r * r


def union(*regions: Region) -> Region:
    return lambda px, py: np.any([r(px, py) for r in regions], axis=0)


def minus(a: Region, b: Region) -> Region:
    return lambda px, py: a(px, py) & ~b(px, py)


def blank() -> np.ndarray:
    return np.zeros((3, 32, 32), np.float32)


def _shape(name: str, x: float, y: float, side: float, colour: str, image: np.ndarray | None = None) -> np.ndarray:
    image = blank() if image is None else image
    alpha = coverage(name, (x, y, side))[None].astype(np.float32)
    return image * (1 - alpha) + alpha * np.asarray(COLORS[colour], np.float32)[:, None, None]


def _rendered(caption: str, seed: int = 0) -> np.ndarray:
    return render(parse_caption(caption), np.random.default_rng(seed))


def catalogue() -> dict[str, tuple[np.ndarray, str]]:
    """name -> (image (3, 32, 32) in [0, 1], a caption the image must not pass)."""
    cases: dict[str, tuple[np.ndarray, str]] = {}
    # forms that are none of the world's shapes
    cases["ring"] = (paint(blank(), minus(disc(16, 16, 6), disc(16, 16, 3.5)), "red"), "a circle")
    cases["frame"] = (paint(blank(), minus(box(10, 10, 22, 22), box(13, 13, 19, 19)), "blue"), "a square")
    cases["letter C"] = (paint(blank(), minus(minus(disc(16, 16, 6), disc(16, 16, 3)), box(16, 13, 23, 19)), "green"), "a circle")
    cases["letter L"] = (paint(blank(), union(box(10, 9, 14, 22), box(10, 18, 22, 22)), "yellow"), "a square")
    cases["letter T"] = (paint(blank(), union(box(9, 9, 23, 13), box(14, 9, 18, 23)), "cyan"), "a square")
    cases["plus"] = (paint(blank(), union(box(9, 14, 23, 18), box(14, 9, 18, 23)), "purple"), "a square")
    stairs = union(box(14, 10, 18, 22), box(11, 14, 21, 22), box(8, 18, 24, 22))
    cases["stepped triangle"] = (paint(blank(), stairs, "red"), "a triangle")
    cases["inverted triangle"] = (paint(blank(), lambda px, py: (py >= 10) & (py <= 22) & (np.abs(px - 16) <= (22 - py) / 2), "green"), "a triangle")
    cases["diamond"] = (paint(blank(), lambda px, py: np.abs(px - 16) + np.abs(py - 16) <= 6.5, "blue"), "a triangle")
    cases["rectangle"] = (paint(blank(), box(8, 12, 24, 20), "yellow"), "a square")
    cases["ellipse"] = (paint(blank(), lambda px, py: ((px - 16) / 8) ** 2 + ((py - 16) / 4) ** 2 <= 1, "cyan"), "a circle")
    cases["two-colour square"] = (paint(paint(blank(), box(10, 10, 22, 22), "red"), box(13, 13, 19, 19), "blue"), "a red square")
    cases["circle with a tail"] = (paint(blank(), union(disc(14, 16, 5), box(18, 15, 27, 17)), "purple"), "a circle")
    cases["circle fused to a square"] = (paint(blank(), union(disc(11, 16, 5), box(15, 11, 25, 21)), "red"), "a circle and a square")
    # objects the count must not miss
    cases["extra speck"] = (paint(_rendered("a red circle", 1), box(27, 27, 29, 29), "red"), "a red circle")
    cases["extra dark square"] = (paint(_rendered("a square", 2), box(25, 2, 30, 7), "blue", brightness=0.3), "a square")
    cases["extra grey blob"] = (paint(_rendered("a triangle", 3), disc(27, 27, 2.5), (0.35, 0.35, 0.35)), "a triangle")
    cases["small third object"] = (paint(_rendered("a circle and a square", 4), disc(28, 4, 1.6), "green"), "a circle and a square")
    # relations that hold only on the other axis
    diagonal = _shape("square", 17, 21, 10, "blue", _shape("circle", 3, 3, 10, "red"))  # 14 right, 18 below
    cases["left of, but mostly above"] = (diagonal, "a circle left of a square")
    side_by_side = _shape("square", 18, 4, 10, "blue", _shape("circle", 2, 9, 10, "red"))
    cases["above, but mostly beside"] = (side_by_side, "a square above a circle")
    return cases
