"""Choosing the main job's config without looking at the figures it reports.

Each variant of shapes.yaml runs as the main job does (`solrl train`, Ray), on screening seeds
(default 10 11 12, disjoint from main_job.py's 0-4) and with its evals on the validation captions
(solrl/toy/prompts/validation.txt, 16 images each, best-of-32), never on the held-out captions
the README reports. The table gives, per variant, the validation preference gap closed and the
strict-accuracy change (paired s.e. per seed; mean and s.e. across seeds), then one JSON line a
variant. Finished runs (an eval.json in OUT/VARIANT/seed-S) are read back, not rerun.

    python benchmarks/config_search.py [--variants default strict_term] [--seeds 10 11 12] [--out runs/config-search]
"""

from __future__ import annotations

import argparse
import math
import pathlib

from common import append_results, with_json_lines
from main_job import mean_se, run

VALIDATION = ["eval.prompts=validation", "eval.validation=", "eval.n=16"]
# the main job every variant below changed: shapes.yaml until 2026-12-05, 16 iterations at 32 candidates
# (the 40 iterations at 16 that replaced it: benchmarks/horizon.py)
SEARCHED = ["train.iterations=16", "rollout.candidates=32"]

# name -> (what it changes, overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "default": ("shapes.yaml as shipped until 2026-12-05", []),
    "strict_term": (
        "the strict pass also paid on its own: R = 0.5 shapes + 0.5 strict + 0.5 size x strict",
        ["reward=[{name: shapes, weight: 0.5}, {name: shapes_strict, weight: 0.5}, {name: shapes_size, weight: 0.5, gate: shapes_strict}]"],
    ),
    "strict_term_1": (
        "the strict pass paid twice as much: R = 0.5 shapes + 1.0 strict + 0.5 size x strict",
        ["reward=[{name: shapes, weight: 0.5}, {name: shapes_strict, weight: 1.0}, {name: shapes_size, weight: 0.5, gate: shapes_strict}]"],
    ),
    "strict_term_1_20it": (
        "strict_term_1 with 20 iterations instead of 16 (what the 10-minute bar leaves room for)",
        ["train.iterations=20", "reward=[{name: shapes, weight: 0.5}, {name: shapes_strict, weight: 1.0}, {name: shapes_size, weight: 0.5, gate: shapes_strict}]"],
    ),
    "strict_term_1_lr6": (
        "strict_term_1 at twice the learning rate (6e-4): in 16 iterations the caption-specific part learns at the pace of"
        " 32, while the strict pass's larger share of the reward's spread holds back the size push",
        ["train.optim.lr=0.0006", "reward=[{name: shapes, weight: 0.5}, {name: shapes_strict, weight: 1.0}, {name: shapes_size, weight: 0.5, gate: shapes_strict}]"],
    ),
    "signed_size": (
        "size paid where the caption holds and charged where it fails: R = 0.5 shapes + 0.5 size x strict - 0.5 size x (1 - strict)",
        ["reward=[{name: shapes, weight: 0.5}, {name: shapes_size, weight: 1.0, gate: shapes_strict}, {name: shapes_size, weight: -0.5}, {name: shapes_strict, weight: 0}]"],
    ),
    "strict_size": (
        "no partial credit: R = 0.5 strict + 0.5 size x strict, so every failing image ties at 0 and the worst seeds are"
        " failing images of any size, not the ones with missing (small) objects",
        ["reward=[{name: shapes_strict, weight: 0.5}, {name: shapes_size, weight: 0.5, gate: shapes_strict}]"],
    ),
    "bf16_explore": (
        "explore previews in BF16 instead of NVFP4 (same 6 steps): is the previews' ranking noise what costs accuracy?",
        ["rollout.explore_precision=bf16"],
    ),
    "kl_1": ("a KL weight that binds: train.nft.kl_weight 1e-4 -> 1.0", ["train.nft.kl_weight=1.0"]),
    "batch_16x8": (
        "twice the prompts a step, half the steps (same samples): 16 prompts x 8 iterations; does a larger batch drift less?",
        ["rollout.prompts_per_iteration=16", "train.iterations=8"],
    ),
    "batch_16x16": (
        "twice the prompts a step at the same explore cost: 16 prompts x 16 candidates (N = 2K), 16 iterations",
        ["rollout.prompts_per_iteration=16", "rollout.candidates=16"],
    ),
    "image_lora": (
        "LoRA on the image stream's attention only (the text stream's projections left as trained)",
        ["model.lora={rank: 32, alpha: 64, target_modules: [to_q, to_k, to_v, to_out.0]}"],
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    parser.add_argument("--out", default="runs/config-search")
    args = parser.parse_args()
    rows, points = [], []
    for name in args.variants:
        what, overrides = VARIANTS[name]
        closed, changes, per_seed, seconds = [], [], [], []
        for seed in args.seeds:
            report, _ = run(pathlib.Path(args.out) / name / f"seed-{seed}", seed, [*VALIDATION, *SEARCHED, *overrides])
            closed.append(report["preference_gap_closed"])
            changes.append(report["final_eval"]["accuracy"] - report["base_eval"]["accuracy"])
            per_seed.append(f"{changes[-1]:+.3f} ± {report['accuracy_change_se']:.3f}")
            seconds.append(report["seconds"])
        (gap, gap_se), (change, change_se) = mean_se(closed), mean_se(changes)
        rows.append([
            name, what, f"{gap:.2f} ± {gap_se:.2f}", f"{change:+.3f} ± {change_se:.3f}", f"{min(changes):+.3f}",
            ", ".join(per_seed), f"{max(seconds):.0f}",
        ])
        finite = lambda v: None if math.isnan(v) else v  # one seed has no s.e., and JSON has no NaN
        points.append({
            "variant": name, "seeds": args.seeds, "gap_closed": gap, "gap_closed_se": finite(gap_se), "accuracy_change": change,
            "accuracy_change_se": finite(change_se), "worst_accuracy_change": min(changes), "max_run_s": max(seconds),
        })
    headers = [
        "variant", "what it changes", "gap closed (mean ± s.e.)", "strict accuracy change (mean ± s.e.)", "worst seed",
        "per seed (paired s.e.)", "longest run s",
    ]
    append_results(
        f"Config search on the validation captions ({len(args.seeds)} screening seeds)",
        with_json_lines(headers, rows, points),
        "evals on the validation captions (20 training captions that are not eval captions, 16 fixed seeds each, "
        "best-of-32 on 20 x 32), never on the held-out captions main_job.py reports; screening seeds disjoint from its "
        "seeds 0-4; ± across seeds is the standard error over run seeds",
    )


if __name__ == "__main__":
    main()
