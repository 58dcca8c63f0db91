"""The shapes world's detector: the objects a person would see in an image, and how an image
meets a caption.

Detection (scipy.ndimage and scikit-image, per image):
1. A pixel brighter than FG_LEVEL in any channel is foreground. Each 8-connected foreground
   component whose summed brightness reaches MIN_MASS (about three full pixels) is a visible
   object and counts, whatever its colour, size or form: small specks, dark or off-palette
   blobs all count, so extra objects are never hidden from the count.
2. A pixel that is alpha * (a palette colour) with alpha >= 0.5 and a small residual is a core
   pixel of that colour. A component whose core holds one colour is one object of that colour;
   one whose core holds several colours in force (a square inside a square, two objects
   touching) is one object per colour. A component without core pixels (too dark, or a colour
   outside the palette) is an unrecognised object: it matches nothing, but it counts.
3. The shape of a coloured object comes from a template fit. For each shape the side that gives
   the object's coverage area is fitted at its centroid, the ideal anti-aliased shape is drawn
   there with the renderer's own geometry, and the two coverage maps are compared by soft IoU.
   The best shape wins if its IoU reaches MIN_IOU; the object must also be one piece without
   holes (Euler number 1). Hollow, nested, letter-like, stepped, stretched or inverted forms
   fit no template and stay unrecognised.

Relations are judged by the dominant axis: "a left of b" needs b's centre at least
POSITION_MARGIN further right and more displaced horizontally than vertically.

Scoring a caption (solrl.toy.captions.Spec): constraints are each expected object's shape, its
colour (given the right shape), the relation (position task) and the exact object count. The
count is met only when the image holds exactly the caption's objects, each of the named shape:
GenEval counts the named class, and a count that any clean shape could meet let RL trade every
caption for one clean circle (a measured collapse).
score = met / total * min(1, expected objects / detected objects), in [0, 1]: extra objects
scale the score down, so a patchwork of every colour and shape cannot collect credit.
strict pass = every constraint met.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from skimage.measure import euler_number

from solrl.toy.captions import COLORS, SHAPES, Spec, parse_caption
from solrl.toy.render import coverage

FG_LEVEL = 0.12  # a pixel brighter than this in any channel is not background
MIN_MASS = 3.0  # summed brightness of a visible object: about three full pixels
MIN_ALPHA = 0.5  # a core pixel is at least half covered by its colour
MAX_RESIDUAL = 0.2  # RGB distance of a core pixel from alpha * its palette colour
MIN_PART = 4  # core pixels a colour needs to be an object of its own inside a component ...
PART_SHARE = 0.2  # ... and its share of the component's core pixels
MIN_CORE = 12  # core pixels a shape needs to be recognised
MIN_SIDE, MAX_SIDE = 4.0, 18.0  # fitted sides outside this are no shape of this world (renders: 7-13)
MIN_IOU = 0.75  # soft IoU with the best-fitting template (renders score >= 0.9)
MAX_OBJECTS = 24  # beyond this many visible objects none is classified: the count has failed anyway
POSITION_MARGIN = 3.0  # centres differ by at least this along the relation's axis

PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.asarray([COLORS[c] for c in PALETTE_NAMES], dtype=np.float32)  # K x 3


@dataclass(frozen=True)
class _Template:
    mask: str | Callable[[np.ndarray, np.ndarray], np.ndarray]  # a world shape's name, or a mask of (u, v)
    fill: float  # share of its bounding square it covers, to fit a side from an area
    centroid_v: float  # height of its centroid within the box


# The world's shapes, and forms that are not among them but that a world shape's template alone
# would accept (a diamond fits a circle at IoU 0.84): an object that a non-world form fits best is
# unrecognised.
_TEMPLATES = {
    "square": _Template("square", 1.0, 0.5),
    "circle": _Template("circle", math.pi / 4, 0.5),
    "triangle": _Template("triangle", 0.5, 2 / 3),
    "diamond": _Template(lambda u, v: np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.5, 0.5, 0.5),
    "inverted triangle": _Template(lambda u, v: (v >= 0) & (v <= 1) & (np.abs(u - 0.5) <= (1 - v) / 2), 0.5, 1 / 3),
}


@dataclass(frozen=True)
class Detection:
    shape: str | None  # None: an unrecognised object
    color: str | None
    x: float  # centre of the fitted box (recognised) or of brightness (unrecognised), in pixels
    y: float
    side: float  # side of the fitted shape's box, or the side of a square of the same mass
    area: float  # summed coverage (or brightness) in pixels


def _pixel_colours(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(core colour index per pixel or -1, coverage per pixel and palette colour) of ... x 3 pixels."""
    p = _PALETTE
    alpha = image @ p.T / (p * p).sum(1)  # H W K
    residual = np.linalg.norm(image[..., None, :] - alpha[..., None] * p, axis=-1)
    ok = (alpha >= MIN_ALPHA) & (residual <= MAX_RESIDUAL)
    best = np.where(ok, residual, np.inf).argmin(-1)
    return np.where(ok.any(-1), best, -1), np.clip(alpha, 0.0, 1.0)


def _unrecognised(mass_map: np.ndarray, top: int, left: int) -> Detection:
    mass = float(mass_map.sum())
    cy, cx = ndimage.center_of_mass(mass_map)
    return Detection(None, None, left + cx + 0.5, top + cy + 0.5, math.sqrt(mass), mass)


def _fit_shape(a: np.ndarray) -> tuple[str, float, float, float] | None:
    """(shape, x, y, side) of the template that best explains coverage map `a`, or None."""
    core = a >= MIN_ALPHA
    if core.sum() < MIN_CORE or euler_number(core, connectivity=2) != 1:
        return None
    total = float(a.sum())
    cy, cx = ndimage.center_of_mass(a)
    cx, cy = cx + 0.5, cy + 0.5  # pixel centres sit at i + 0.5
    best: tuple[float, str, float, float, float] | None = None
    for shape, template in _TEMPLATES.items():
        side = math.sqrt(total / template.fill)
        if not MIN_SIDE <= side <= MAX_SIDE:
            continue
        x, y = cx - side / 2, cy - template.centroid_v * side
        # one window holding both the object and the template, with a pixel to spare
        x0, y0 = min(0, math.floor(x) - 1), min(0, math.floor(y) - 1)
        x1, y1 = max(a.shape[1], math.ceil(x + side) + 1), max(a.shape[0], math.ceil(y + side) + 1)
        ideal = coverage(template.mask, (x - x0, y - y0, side), window=(0, 0, x1 - x0, y1 - y0))
        seen = np.zeros_like(ideal)
        seen[-y0 : -y0 + a.shape[0], -x0 : -x0 + a.shape[1]] = a
        iou = float(np.minimum(seen, ideal).sum() / np.maximum(seen, ideal).sum())
        if best is None or iou > best[0]:
            best = (iou, shape, x + side / 2, y + side / 2, side)
    if best is None or best[0] < MIN_IOU or best[1] not in SHAPES:
        return None
    return best[1], best[2], best[3], best[4]


def _coloured(a: np.ndarray, colour: int, top: int, left: int) -> Detection:
    fit = _fit_shape(a)
    if fit is None:
        return _unrecognised(a, top, left)
    shape, x, y, side = fit
    return Detection(shape, PALETTE_NAMES[colour], left + x, top + y, side, float(a.sum()))


def detect_image(image: np.ndarray, colours: tuple[np.ndarray, np.ndarray] | None = None) -> list[Detection]:
    """The visible objects of one image, H x W x 3 in [0, 1]; `colours` is its _pixel_colours if known."""
    brightness = image.max(-1)
    labels, n = ndimage.label(brightness > FG_LEVEL, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    visible = index[ndimage.sum_labels(brightness, labels, index) >= MIN_MASS]
    if len(visible) > MAX_OBJECTS:  # bounded work: report them, classify none
        centres = ndimage.center_of_mass(brightness, labels, visible)
        masses = ndimage.sum_labels(brightness, labels, visible)
        return [Detection(None, None, cx + 0.5, cy + 0.5, math.sqrt(m), float(m)) for (cy, cx), m in zip(centres, masses)]
    classes, alpha = colours if colours is not None else _pixel_colours(image)
    boxes = ndimage.find_objects(labels)
    found = []
    for label in visible:
        rows, cols = boxes[label - 1]
        if max(rows.stop - rows.start, cols.stop - cols.start) > 2 * MAX_SIDE:
            found.append(_unrecognised(np.where(labels[rows, cols] == label, brightness[rows, cols], 0), rows.start, cols.start))
            continue
        mine = labels[rows, cols] == label
        core = np.where(mine, classes[rows, cols], -1)
        counts = np.bincount(core[core >= 0], minlength=len(_PALETTE))
        parts = [k for k in range(len(_PALETTE)) if counts[k] >= max(MIN_PART, PART_SHARE * counts.sum())]
        if not parts:
            found.append(_unrecognised(np.where(mine, brightness[rows, cols], 0), rows.start, cols.start))
        elif len(parts) == 1:
            found.append(_coloured(np.where(mine, alpha[rows, cols, parts[0]], 0), parts[0], rows.start, cols.start))
        else:
            found += [_coloured((core == k).astype(np.float32), k, rows.start, cols.start) for k in parts]
    return found


def detect(images: torch.Tensor) -> list[list[Detection]]:
    """Objects found in each image of a batch (B, 3, H, W) in [0, 1]."""
    pixels = images.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    classes, alpha = _pixel_colours(pixels)  # one pass over the batch
    return [detect_image(image, (c, a)) for image, c, a in zip(pixels, classes, alpha)]


def _relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    dx, dy = b.x - a.x, b.y - a.y  # where b sits relative to a
    along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return along >= POSITION_MARGIN and along > abs(across)


def _met(spec: Spec, assigned: Sequence[Detection | None], n_detections: int) -> int:
    """Constraints met by one assignment of detections to the caption's objects."""
    met = shapes = 0
    for want, got in zip(spec.objects, assigned):
        if got is not None and got.shape == want.shape:
            met += 1
            shapes += 1
            if want.color is not None and got.color == want.color:
                met += 1
    if spec.relation is not None:
        a, b = assigned[0], assigned[1]
        if (
            a is not None and b is not None
            and a.shape == spec.objects[0].shape and b.shape == spec.objects[1].shape
            and _relation_holds(a, b, spec.relation)
        ):
            met += 1
    # the count: exactly the caption's objects are present, every one of the named shape
    return met + (n_detections == len(spec.objects) and shapes == len(spec.objects))


def score_detections(spec: Spec, detections: Sequence[Detection]) -> tuple[float, bool]:
    """(score in [0, 1], strict pass) of one image's detections against a caption's Spec."""
    n = len(spec.objects)
    total = n + sum(o.color is not None for o in spec.objects) + (spec.relation is not None) + 1
    recognised = [d for d in detections if d.shape is not None]
    # the best one-to-one assignment of detections to the caption's objects
    candidates: list[Detection | None] = recognised + [None] * n
    if len(recognised) <= 6:
        met = max(_met(spec, perm, len(detections)) for perm in itertools.permutations(candidates, n))
    else:  # so many objects that the count cannot hold and the count penalty dominates; assign greedily
        pool, assigned = list(recognised), []
        for want in spec.objects:
            # prefer a detection that also has the wanted colour, else any of the right shape
            same_shape = [d for d in pool if d.shape == want.shape]
            pick = next((d for d in same_shape if want.color in (None, d.color)), same_shape[0] if same_shape else None)
            if pick is not None:
                pool.remove(pick)
            assigned.append(pick)
        met = _met(spec, assigned, len(detections))
    score = met / total * min(1.0, n / max(1, len(detections)))
    return score, met == total


# The renderer draws one or two objects with sides in 8..13 px, three or four in 7..10 px.
SIZE_RANGES = {1: (8.0, 13.0), 2: (8.0, 13.0), 3: (7.0, 10.0), 4: (7.0, 10.0)}


def size_preference(detections: Sequence[Detection]) -> float:
    """A prompt-agnostic preference in [0, 1]: bigger objects, within what the renderer draws.

    Each object scores (side - lo) / (hi - lo) for the renderer's side range at this many objects,
    1 at the range's top and falling back to 0 as far above it as the range is wide, so the
    optimum stays inside the pretraining distribution; the image scores its objects' mean.
    """
    if not detections:
        return 0.0
    lo, hi = SIZE_RANGES[min(len(detections), 4)]
    width = hi - lo
    parts = [min((d.side - lo) / width, 1.0 - (d.side - hi) / width) for d in detections]
    return float(np.mean(np.clip(parts, 0.0, 1.0)))


def judge(images: torch.Tensor, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(caption score, strict pass, size preference), each (B,), for images in [0, 1] and captions."""
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions; pass one caption per image")
    specs = [parse_caption(c) for c in captions]
    found = detect(images)
    results = [score_detections(s, d) for s, d in zip(specs, found)]
    return (
        torch.tensor([r[0] for r in results], dtype=torch.float32),
        torch.tensor([r[1] for r in results], dtype=torch.bool),
        torch.tensor([size_preference(d) for d in found], dtype=torch.float32),
    )
