"""What the reward asks for, apart from how well the learner gets there (issue 29 item 1).

KL-regularized RL's optimum for a reward R is the base model tilted by it: p(x) ~ p_base(x)
exp(lambda R(x)), one lambda for every caption. This samples the base model many times a caption,
weighs the samples by exp(lambda R) and reads off, as lambda grows, the share of the preference gap
the tilted model closes (the main job's figure: mean size preference against the base's best-of-32)
and its strict-accuracy change. If the shipped reward's tilt holds accuracy where it closes 40 % of
the gap, the bar is within what the reward asks for and a learner that loses accuracy falls short
of its own optimum; if even the optimum loses it, no learner of that reward meets the bar.

    python benchmarks/tilted_optimum.py [--seeds 128] [--prompts validation|eval]

Rewards compared: the shipped R = 0.5 shapes + 0.5 size x strict; the same plus 0.5 strict; and the
size preference alone. The interval of the accuracy change at a gap comes from resampling each
caption's seeds (200 bootstrap draws). Appends a RESULTS.md entry and one JSON line a reward.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import append_results, with_json_lines

from solrl.builders import build_policy
from solrl.config import load_config
from solrl.evaluation import eval_copy, load_run_prompts, validation_prompts
from solrl.sampling.eval_images import eval_pairs
from solrl.toy.captions import parse_caption
from solrl.toy_app.evaluate import measure

REWARDS = {
    "shipped: 0.5 shapes + 0.5 size x strict": lambda m: 0.5 * m["score"] + 0.5 * m["preference"] * m["passed"],
    "+ 0.5 strict": lambda m: 0.5 * m["score"] + 0.5 * m["passed"] + 0.5 * m["preference"] * m["passed"],
    "size preference alone": lambda m: m["preference"],
}
LAMBDAS = np.concatenate([np.linspace(0, 10, 41), np.linspace(11, 60, 50)])
GAPS = (0.4, 0.5)


def tilted(measures: dict[str, np.ndarray], reward: np.ndarray, lam: float, tasks: list[str]) -> tuple[float, float, float]:
    """(mean preference, strict accuracy, mean KL from the base in nats) of the base tilted by
    exp(lam R); measures are (captions, seeds) arrays, accuracy is the eval's mean over tasks."""
    logits = lam * reward
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    preference = float((w * measures["preference"]).sum(axis=1).mean())
    passed = (w * measures["passed"]).sum(axis=1)
    accuracy = float(np.mean([passed[[i for i, t in enumerate(tasks) if t == task]].mean() for task in sorted(set(tasks))]))
    kl = float(np.mean((w * np.log(np.maximum(w * w.shape[1], 1e-300))).sum(axis=1)))
    return preference, accuracy, kl


def at_gaps(measures, reward, tasks) -> dict[float, tuple[float, float] | None]:
    """For each gap share in GAPS: (accuracy change, KL) of the smallest tilt that closes it, by
    linear interpolation on the lambda grid; None when no tilt closes it."""
    base_pref, base_acc, _ = tilted(measures, reward, 0.0, tasks)
    best = measures["preference"][:, :32].max(axis=1).mean()  # the eval's best-of-32
    curve = [tilted(measures, reward, lam, tasks) for lam in LAMBDAS]
    shares = [(p - base_pref) / (best - base_pref) for p, _, _ in curve]
    out: dict[float, tuple[float, float] | None] = {}
    for gap in GAPS:
        hit = next((i for i, s in enumerate(shares) if s >= gap), None)
        if hit is None or hit == 0:
            out[gap] = None
            continue
        f = (gap - shares[hit - 1]) / (shares[hit] - shares[hit - 1])
        (_, a0, k0), (_, a1, k1) = curve[hit - 1], curve[hit]
        out[gap] = (a0 + f * (a1 - a0) - base_acc, k0 + f * (k1 - k0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=128, help="base samples a caption (at least 32: the best-of-32 is of the first 32)")
    parser.add_argument("--prompts", choices=["validation", "eval"], default="validation")
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    config = load_config()
    prompts = validation_prompts(config) if args.prompts == "validation" else load_run_prompts(config, config.eval.prompts)
    pairs = eval_pairs(prompts, args.seeds, config.eval.seed)
    measured = measure(eval_copy(build_policy(config.model), config), pairs, config.eval.sampling)
    measures = {k: measured[k].reshape(len(prompts), args.seeds) for k in ("score", "passed", "preference")}
    tasks = [parse_caption(p).task for p in prompts]
    rng = np.random.default_rng(0)
    rows, points = [], []
    for name, reward_of in REWARDS.items():
        found = at_gaps(measures, reward_of(measures), tasks)
        draws = []
        for _ in range(args.bootstrap):
            pick = rng.integers(0, args.seeds, size=(len(prompts), args.seeds))
            resampled = {k: np.take_along_axis(v, pick, axis=1) for k, v in measures.items()}
            draws.append(at_gaps(resampled, reward_of(resampled), tasks))
        row, point = [name], {"reward": name}
        for gap in GAPS:
            changes = [d[gap][0] for d in draws if d[gap] is not None]
            low, high = np.percentile(changes, [2.5, 97.5]) if changes else (float("nan"), float("nan"))
            if found[gap] is None:
                row += ["not reached", "-"]
            else:
                row += [f"{found[gap][0]:+.3f} [{low:+.3f}, {high:+.3f}]", f"{found[gap][1]:.2f}"]
            point |= {
                f"accuracy_change_at_{gap}": None if found[gap] is None else found[gap][0],
                f"interval_at_{gap}": [round(float(low), 4), round(float(high), 4)],
                f"kl_at_{gap}": None if found[gap] is None else found[gap][1],
            }
        rows.append(row)
        points.append(point)
    headers = ["reward R tilted by", *[c for g in GAPS for c in (f"accuracy change at gap {g:.2f} [95 %]", f"KL nats at {g:.2f}")]]
    append_results(
        f"The reward's own optimum: the base model tilted by exp(lambda R) ({args.prompts} captions, {args.seeds} base samples each)",
        with_json_lines(headers, rows, points),
        f"{len(prompts)} captions; base preference, accuracy and best-of-32 from the same samples; KL of the tilted from the base model, "
        "mean over captions; interval: 2.5-97.5 percentiles over seed resamples",
    )


if __name__ == "__main__":
    main()
