"""The `shapes` reward: a GenEval-style detector that checks an image against its caption.

Detection, batched in torch:
1. each pixel is explained as alpha * (a palette colour); a pixel with alpha >= 0.5 and a small
   residual takes that colour, any other clearly non-black pixel is "other";
2. connected components (8-neighbour) per colour class, by max-pool label propagation;
3. a component of at least MIN_AREA pixels is an object; its shape comes from its fill ratio
   (area / bounding box), aspect ratio, and how much of its mass lies below its middle
   (triangles point up). Components of "other" pixels, or of no recognisable shape, are
   unrecognised objects: they match nothing, but they count.

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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from solrl.toy.captions import COLORS, Spec, parse_caption

MIN_AREA = 12  # pixels; smaller specks are ignored
MIN_ALPHA = 0.5  # a pixel belongs to an object when the object covers at least half of it
MAX_RESIDUAL = 0.2  # RGB distance from alpha * palette colour
OTHER_LEVEL = 0.35  # a pixel brighter than this in any channel is not background
MAX_SIDE = 18  # objects are at most 13 px wide when rendered; bigger blobs are not shapes
MIN_SIDE = 4
POSITION_MARGIN = 3.0  # bounding-box centres must differ by this much along the relation's axis

_PALETTE_NAMES = tuple(COLORS)
_PALETTE = torch.tensor([COLORS[c] for c in _PALETTE_NAMES], dtype=torch.float32)
_OTHER = len(_PALETTE_NAMES)


@dataclass(frozen=True)
class Detection:
    shape: str | None  # None: an unrecognised object
    color: str | None
    x: float  # bounding-box centre
    y: float
    area: int


def classify_pixels(images: torch.Tensor) -> torch.Tensor:
    """Per-pixel class (B, H, W): palette index, _OTHER, or -1 for background."""
    x = images.float().permute(0, 2, 3, 1).unsqueeze(-2)  # B H W 1 3
    p = _PALETTE.to(images.device)  # K 3
    alpha = ((x * p).sum(-1) / (p * p).sum(-1)).clamp(0, 1.5)  # B H W K
    residual = (x - alpha.unsqueeze(-1) * p).norm(dim=-1)
    ok = (alpha >= MIN_ALPHA) & (residual <= MAX_RESIDUAL)
    best = residual.masked_fill(~ok, float("inf")).argmin(-1)
    classes = torch.where(ok.any(-1), best, torch.full_like(best, -1))
    other = (images.float().amax(1) > OTHER_LEVEL) & (classes < 0)
    return torch.where(other, torch.full_like(classes, _OTHER), classes)


def _components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of boolean masks (N, H, W); 0 = not in the mask."""
    n, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, h, w).expand(n, h, w)
    labels = torch.where(mask, ids, torch.zeros_like(ids))
    while True:
        grown = F.max_pool2d(labels.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
        grown = torch.where(mask, grown, torch.zeros_like(grown))
        if torch.equal(grown, labels):
            return labels.long()
        labels = grown


def _shape_of(w: int, h: int, area: int, below: int, above: int) -> str | None:
    if not (MIN_SIDE <= min(w, h) and max(w, h) <= MAX_SIDE):
        return None
    fill, aspect = area / (w * h), w / h
    lower = below / max(1, below + above)
    # Measured on 900 renders: squares fill >= 0.95, pixelated circles 0.64-0.88 with 42-57% of
    # their pixels in the lower half, triangles 0.50-0.68 with 68-78% in the lower half.
    if not 0.7 <= aspect <= 1.45:
        return None
    if lower >= 0.63 and 0.4 <= fill <= 0.76:
        return "triangle"
    if fill >= 0.92 and 0.4 <= lower <= 0.6:
        return "square"
    if 0.58 <= fill < 0.92 and 0.38 <= lower <= 0.6:
        return "circle"
    return None


def detect(images: torch.Tensor) -> list[list[Detection]]:
    """Objects found in each image of a batch (B, 3, H, W) in [0, 1]."""
    b, _, h, w = images.shape
    classes = classify_pixels(images)
    k = _OTHER + 1
    masks = torch.stack([classes == c for c in range(k)], dim=1).view(b * k, h, w)
    labels = _components(masks)
    found: list[list[Detection]] = [[] for _ in range(b)]
    plane, ys, xs = torch.nonzero(labels, as_tuple=True)
    if len(plane) == 0:
        return found
    key = plane * (h * w + 1) + labels[plane, ys, xs]
    uniq, inverse = torch.unique(key, return_inverse=True)
    m = len(uniq)

    def reduce(values: torch.Tensor, how: str) -> torch.Tensor:
        init = {"sum": 0, "amin": h * w, "amax": -1}[how]
        out = torch.full((m,), init, dtype=torch.long, device=values.device)
        return out.scatter_reduce(0, inverse, values.long(), reduce=how, include_self=how != "sum")

    area = reduce(torch.ones_like(xs), "sum")
    x0, x1, y0, y1 = reduce(xs, "amin"), reduce(xs, "amax"), reduce(ys, "amin"), reduce(ys, "amax")
    mid2 = (y0 + y1)[inverse]  # twice the box's middle row, per pixel
    below = reduce((2 * ys > mid2).long(), "sum")
    above = reduce((2 * ys < mid2).long(), "sum")
    comp_plane = uniq // (h * w + 1)
    for i in torch.nonzero(area >= MIN_AREA).flatten().tolist():
        image, cls = divmod(int(comp_plane[i]), k)
        bw, bh = int(x1[i] - x0[i] + 1), int(y1[i] - y0[i] + 1)
        shape = None if cls == _OTHER else _shape_of(bw, bh, int(area[i]), int(below[i]), int(above[i]))
        color = None if shape is None else _PALETTE_NAMES[cls]
        found[image].append(Detection(shape, color, (x0[i] + x1[i]).item() / 2 + 0.5, (y0[i] + y1[i]).item() / 2 + 0.5, int(area[i])))
    return found


def _relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    return {
        "left of": b.x - a.x >= POSITION_MARGIN,
        "right of": a.x - b.x >= POSITION_MARGIN,
        "above": b.y - a.y >= POSITION_MARGIN,
        "below": a.y - b.y >= POSITION_MARGIN,
    }[relation]


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


class ShapesReward:
    """Batched shapes reward: scores in [0, 1] and strict pass flags for (image, caption) pairs.
    Called, it returns the score, or with `strict` the pass flag as 0 / 1 (the eval's criterion)."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.name = "shapes_strict" if strict else "shapes"

    def evaluate(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B,), passed (B,) bool) for images in [0, 1] and their captions."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; pass one caption per image")
        specs = [parse_caption(p) for p in prompts]
        results = [score_detections(s, d) for s, d in zip(specs, detect(images.detach().cpu()))]
        scores = torch.tensor([r[0] for r in results], dtype=torch.float32)
        passed = torch.tensor([r[1] for r in results], dtype=torch.bool)
        return scores, passed

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        scores, passed = self.evaluate(images, prompts)
        return passed.float() if self.strict else scores
