"""The caption grammar of the shapes world: GenEval's six task types over coloured shapes.

Every caption parses into a Spec (what must be in the image); the renderer draws a Spec and
the shapes reward checks an image against one. The grammar, one template per task:

    single_object      a {shape}                               a circle
    two_object         a {shape} and a {shape}                 a circle and a square
    counting           {n} {shape}s, n in one..four            three triangles
    colors             a {color} {shape}                       a red circle
    position           a {shape} {relation} a {shape}          a circle left of a square
    color_attr         a {color} {shape} and a {color} {shape} a red circle and a blue square
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from importlib import resources

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.15, 0.75, 0.15),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.92, 0.85, 0.10),
    "purple": (0.65, 0.15, 0.85),
    "cyan": (0.10, 0.80, 0.85),
}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = ("one", "two", "three", "four")
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    color: str | None = None  # None: any colour


@dataclass(frozen=True)
class Spec:
    """What an image must contain: exactly these objects, and a relation between the first two."""

    task: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None  # objects[0] {relation} objects[1]


CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def equivalent(a: Spec, b: Spec) -> bool:
    """Whether two specs ask for the same image ('a circle and a square' = 'a square and a circle',
    'a circle left of a square' = 'a square right of a circle')."""
    if a.relation is not None or b.relation is not None:
        if a == b:
            return True
        return a.relation is not None and b.relation is not None and a.objects == b.objects[::-1] and CONVERSE[a.relation] == b.relation
    key = lambda s: sorted((o.shape, o.color or "") for o in s.objects)  # noqa: E731
    return key(a) == key(b)


class CaptionError(ValueError):
    """A caption outside the grammar; the message says what was expected."""


def _shape(word: str, caption: str) -> str:
    if word not in SHAPES:
        raise CaptionError(f"caption {caption!r}: {word!r} is not a shape; shapes are {list(SHAPES)}")
    return word


def _color(word: str, caption: str) -> str:
    if word not in COLORS:
        raise CaptionError(f"caption {caption!r}: {word!r} is not a colour; colours are {list(COLORS)}")
    return word


def parse_caption(caption: str) -> Spec:
    """The Spec of a caption in the grammar (see the module docstring), or a CaptionError."""
    words = caption.strip().lower().split()
    text = " ".join(words)
    if len(words) == 2 and words[0] in NUMBERS:
        n = NUMBERS.index(words[0]) + 1
        noun = words[1][:-1] if n > 1 and words[1].endswith("s") else words[1]
        if n > 1 and not words[1].endswith("s"):
            raise CaptionError(f"caption {caption!r}: counts above one take a plural ('{words[0]} {noun}s')")
        return Spec("counting", (ObjectSpec(_shape(noun, caption)),) * n)
    if not words or words[0] != "a":
        raise CaptionError(f"caption {caption!r}: expected 'a ...' or a count word {list(NUMBERS)} first")
    for rel in RELATIONS:
        token = f" {rel} a "
        if token in text:
            left, right = text[2:].split(token, 1)
            return Spec("position", (ObjectSpec(_shape(left, caption)), ObjectSpec(_shape(right, caption))), rel)
    if " and a " in text:
        parts = [p.split() for p in text[2:].split(" and a ", 1)]
        if all(len(p) == 1 for p in parts):
            return Spec("two_object", tuple(ObjectSpec(_shape(p[0], caption)) for p in parts))
        if all(len(p) == 2 for p in parts):
            return Spec("color_attr", tuple(ObjectSpec(_shape(p[1], caption), _color(p[0], caption)) for p in parts))
        raise CaptionError(f"caption {caption!r}: both objects need a colour, or neither")
    if len(words) == 2:
        return Spec("single_object", (ObjectSpec(_shape(words[1], caption)),))
    if len(words) == 3:
        return Spec("colors", (ObjectSpec(_shape(words[2], caption), _color(words[1], caption)),))
    raise CaptionError(f"caption {caption!r} does not fit any task template: {list(TASKS)}")


def all_captions() -> dict[str, list[str]]:
    """Every caption of the grammar, by task."""
    pairs = [(a, b) for a, b in itertools.permutations(SHAPES, 2)]
    colored = [(c, s) for c in COLORS for s in SHAPES]
    return {
        "single_object": [f"a {s}" for s in SHAPES],
        "two_object": [f"a {a} and a {b}" for a, b in pairs],
        "counting": [f"{w} {s}{'s' if i else ''}" for i, w in enumerate(NUMBERS) for s in SHAPES],
        "colors": [f"a {c} {s}" for c, s in colored],
        "position": [f"a {a} {r} a {b}" for a, b in pairs for r in RELATIONS],
        "color_attr": [
            f"a {c1} {s1} and a {c2} {s2}" for (c1, s1), (c2, s2) in itertools.permutations(colored, 2) if s1 != s2 and c1 != c2
        ],
    }


# Share of each task's captions held out for evaluation. single_object has one caption per
# shape, so it cannot hold any out without dropping a shape: its eval captions equal train's.
HOLDOUT = {"two_object": 1 / 3, "counting": 0.25, "colors": 0.25, "position": 0.25, "color_attr": 0.25}


def split_captions(seed: int = 0) -> tuple[list[str], list[str]]:
    """The (train, eval) split the shipped prompt files were written from."""
    rng = random.Random(seed)
    train, evaluation = [], []
    for task, captions in all_captions().items():
        if task not in HOLDOUT:
            train += captions
            evaluation += captions
            continue
        while True:
            held = set(rng.sample(captions, max(1, round(HOLDOUT[task] * len(captions)))))
            kept = [c for c in captions if c not in held]
            # every word of the task must still be seen in training
            if {w for c in held for w in c.split()} <= {w for c in kept for w in c.split()}:
                break
        train += kept
        evaluation += [c for c in captions if c in held]
    return train, evaluation


VALIDATION_PER_TASK = 8  # at most; at least 2, about a quarter of the task's train-only captions


def validation_captions(train: list[str], evaluation: list[str], seed: int = 0) -> list[str]:
    """The shipped 'validation' set: a few training captions of each task that are not eval
    captions (so single_object, whose captions are shared, has none). Periodic evals measure it
    to choose the checkpoint train.keep_best keeps, so the held-out figures are never selected on."""
    rng, held = random.Random(seed), set(evaluation)
    chosen = []
    for task in all_captions():
        pool = [c for c in train if c not in held and parse_caption(c).task == task]
        if pool:
            chosen += rng.sample(pool, min(len(pool), VALIDATION_PER_TASK, max(2, round(len(pool) / 4))))
    return chosen


SHIPPED = ("train", "eval", "validation")


def load_prompts(name: str) -> list[str]:
    """Captions of the shipped set 'train', 'eval' or 'validation', or of a text file (one caption a line)."""
    if name in SHIPPED:
        text = resources.files("solrl.toy").joinpath("prompts", f"{name}.txt").read_text()
    else:
        with open(name) as f:
            text = f.read()
    captions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    for i, caption in enumerate(captions):
        try:
            parse_caption(caption)
        except CaptionError as exc:
            raise CaptionError(f"{name}, caption {i + 1}: {exc}") from None
    return captions
