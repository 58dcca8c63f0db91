"""The shapes world: caption grammar, prompt split, renderer and the shapes reward's bars."""

import random

import numpy as np
import pytest
import torch

from solrl.rewards.shapes import ShapesReward, detect
from solrl.toy.captions import (
    COLORS,
    SHAPES,
    TASKS,
    CaptionError,
    ObjectSpec,
    Spec,
    all_captions,
    equivalent,
    load_prompts,
    parse_caption,
    split_captions,
)
from solrl.toy.render import _coverage, render_batch


def test_grammar_covers_six_tasks_six_colours_three_shapes():
    assert len(COLORS) >= 6 and len(SHAPES) >= 3
    captions = all_captions()
    assert set(captions) == set(TASKS)
    for task, caps in captions.items():
        assert all(parse_caption(c).task == task for c in caps), task
    assert parse_caption("four triangles") == Spec("counting", (ObjectSpec("triangle"),) * 4)
    assert parse_caption("a red circle and a blue square") == Spec(
        "color_attr", (ObjectSpec("circle", "red"), ObjectSpec("square", "blue"))
    )
    assert parse_caption("a circle below a square").relation == "below"


@pytest.mark.parametrize(
    "bad, message",
    [("a hexagon", "not a shape"), ("a pink circle", "not a colour"), ("three circle", "plural"), ("the circle", "expected 'a")],
)
def test_bad_captions_name_the_problem(bad, message):
    with pytest.raises(CaptionError, match=message):
        parse_caption(bad)


def test_shipped_prompt_sets_match_the_split_and_hold_out_combinations():
    train, evaluation = load_prompts("train"), load_prompts("eval")
    assert (train, evaluation) == split_captions(seed=0)
    tasks = {t: [c for c in evaluation if parse_caption(c).task == t] for t in TASKS}
    assert all(tasks.values())
    # every eval caption of a multi-attribute task is a combination never seen in training;
    # single_object has one caption per shape and shares them (documented in captions.py)
    for task, caps in tasks.items():
        overlap = set(caps) & set(train)
        assert overlap == (set(caps) if task == "single_object" else set()), task
    # and every word of the eval set occurs in training
    assert {w for c in evaluation for w in c.split()} <= {w for c in train for w in c.split()}


def test_renders_are_32px_rgb_antialiased_and_reproducible():
    specs = [parse_caption(c) for c in ["a red circle", "four squares", "a triangle left of a circle"]]
    a, b = render_batch(specs, 7), render_batch(specs, 7)
    assert a.shape == (3, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, render_batch(specs, 8))
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    # anti-aliased: edge pixels hold partial coverage, not only 0 or a full colour
    red = torch.tensor(COLORS["red"]).view(3, 1, 1)
    coverage = (a[0] / red).mean(0)
    assert ((coverage > 0.05) & (coverage < 0.95)).sum() >= 8


def _eval_specs(n: int, seed: int):
    by_task: dict[str, list[str]] = {}
    for c in load_prompts("eval"):
        by_task.setdefault(parse_caption(c).task, []).append(c)
    rng = random.Random(seed)
    tasks = sorted(by_task)
    return [rng.choice(by_task[rng.choice(tasks)]) for _ in range(n)]


@pytest.fixture(scope="module")
def eval_renders():
    captions = _eval_specs(2000, seed=11)
    return captions, render_batch([parse_caption(c) for c in captions], 2024)


def test_reward_passes_fresh_renders_of_eval_captions(eval_renders):
    captions, images = eval_renders
    scores, passed = ShapesReward().evaluate(images, captions)
    assert float(passed.float().mean()) >= 0.99
    assert float(scores.min()) >= 0 and float(scores.max()) <= 1
    for task in TASKS:
        idx = [i for i, c in enumerate(captions) if parse_caption(c).task == task]
        assert float(passed[idx].float().mean()) >= 0.97, task


def test_strict_shapes_reward_is_the_pass_flag(eval_renders):
    """reward: shapes_strict trains on what the eval counts: 1 for a strict pass, else 0."""
    from solrl.rewards.registry import RewardSpec, build_reward

    captions, images = eval_renders
    captions, images = captions[:64], images[:64]
    shuffled = captions[1:] + captions[:1]  # mostly wrong captions: a mix of passes and failures
    _, passed = ShapesReward().evaluate(images, shuffled)
    strict = build_reward([RewardSpec(name="shapes_strict")])(images, shuffled)
    assert 0 < int(passed.sum()) < 64 and torch.equal(strict, passed.float())


def test_reward_fails_renders_under_another_caption_of_the_same_task(eval_renders):
    captions, images = eval_renders
    rng = random.Random(5)
    pools = all_captions()
    swapped = []
    for c in captions:
        spec = parse_caption(c)
        # a paraphrase ('a square and a circle') asks for the same image: not a swap
        swapped.append(rng.choice([x for x in pools[spec.task] if not equivalent(parse_caption(x), spec)]))
    _, passed = ShapesReward().evaluate(images, swapped)
    assert float(passed.float().mean()) <= 0.05


def _patchwork(seed: int) -> np.ndarray:
    """Every colour and shape at once, tiled over the canvas."""
    rng = np.random.default_rng(seed)
    image = np.zeros((3, 32, 32), np.float32)
    combos = [(c, s) for c in COLORS for s in SHAPES]
    rng.shuffle(combos)
    cells = [(x, y) for x in range(0, 32, 8) for y in range(0, 32, 8)]
    for (x, y), (color, shape) in zip(cells, combos):
        alpha = _coverage(shape, (x + 1, y + 1, 6.5), 32)[None].astype(np.float32)
        image = image * (1 - alpha) + alpha * np.asarray(COLORS[color], np.float32)[:, None, None]
    return image


def test_degenerate_images_score_low():
    captions = _eval_specs(300, seed=3)
    g = torch.Generator().manual_seed(0)
    degenerate = {
        "blank": torch.zeros(300, 3, 32, 32),
        "white": torch.ones(300, 3, 32, 32),
        "uniform noise": torch.rand(300, 3, 32, 32, generator=g),
        "gaussian noise": (0.5 + 0.5 * torch.randn(300, 3, 32, 32, generator=g)).clamp(0, 1),
        "patchwork": torch.from_numpy(np.stack([_patchwork(i) for i in range(300)])),
    }
    reward = ShapesReward()
    for name, images in degenerate.items():
        assert float(reward(images, captions).mean()) <= 0.2, name
    assert len(detect(degenerate["patchwork"][:1])[0]) >= 15


def test_one_full_frame_blob_is_not_an_object():
    square = torch.zeros(1, 3, 32, 32)
    square[:, :, 2:30, 2:30] = torch.tensor(COLORS["red"]).view(3, 1, 1)
    assert detect(square)[0][0].shape is None
    assert float(ShapesReward()(square, ["a red square"])[0]) == 0.0


def test_partial_credit():
    images = render_batch([parse_caption("a red circle")], 0)
    scores, passed = ShapesReward().evaluate(images, ["a blue circle"])
    # circle (1) and count (1) met, colour (1) not: 2 of 3
    assert float(scores[0]) == pytest.approx(2 / 3) and not bool(passed[0])
    # a clean object of the wrong shape earns nothing: the count is of the named shape
    assert float(ShapesReward()(images, ["a square"])[0]) == 0.0
    two = render_batch([parse_caption("a circle and a square")], 1)
    # the circle is found (1 of 3); the count fails because the square is not a triangle
    assert float(ShapesReward()(two, ["a circle and a triangle"])[0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="one caption per image"):
        ShapesReward().evaluate(images, ["a circle", "a square"])
