"""The paper's ablation on the shapes preference task, against modeled GPU cost, over seeds.

Five arms, each trained with --local on the same prompts and budget:
  a  DiffusionNFT: BF16 samples at full steps, K seeds per prompt, all trained (K-in-K)
  b  BF16 K-in-N: N BF16 seeds at full steps, the K most contrastive trained
  c  NVFP4 K-in-N: N NVFP4 seeds at explore steps, the K selected trained on directly
  d  Sol-RL: N NVFP4 seeds explored, the K selected regenerated in BF16 and trained
  e  naive quantization (the paper's baseline): DiffusionNFT K-in-K sampled in NVFP4 at full
     steps and trained on directly
The x axis is the modeled GPU cost of training (explore + regenerate + train, in BF16 calls;
solrl/cost.py; training counts its policy forward and backward and the old and reference
forwards), not CPU seconds: emulated NVFP4 is slower than fp32 on a CPU. Held-out preference is
evaluated every `eval.every` iterations, chosen per arm so the eval points fall near the same
costs. Per arm: the curve (mean and s.e. over seeds), the cost to reach a target (80 % of the
best arm's final gain, by default) with a bootstrap interval over seeds, and the ratios a/d, b/d,
c/d and e/d with theirs. Beside a/d, its structural ceiling: a Sol-RL iteration costs a
DiffusionNFT iteration plus the explore, so a/d can be at most a's iterations to target over d's.

    python benchmarks/convergence.py --seeds 0 1 2 3 4 --budget 60000 [--arms a b c d e] [--set k=v ...]
    python benchmarks/convergence.py --summarize DIR      # redo the analysis of finished runs

Runs go to --out (default runs/convergence/ARM/seed-S) and are reused when finished, so an
interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import math
import multiprocessing
import pathlib
import shutil

import numpy as np
from common import append_results, with_json_lines

from solrl.config import load_config
from solrl.cost import CostMeter
from solrl.local_run import LocalRun

ARMS = {
    "a": ("DiffusionNFT (BF16, K-in-K)", ["rollout.mode=direct", "rollout.explore_precision=bf16", "rollout.candidates={k}", "rollout.explore.steps={full}"]),
    "b": ("BF16 K-in-N", ["rollout.mode=direct", "rollout.explore_precision=bf16", "rollout.explore.steps={full}"]),
    "c": ("NVFP4 K-in-N, trained on NVFP4 samples", ["rollout.mode=direct"]),
    "d": ("Sol-RL (NVFP4 explore, BF16 regenerate)", []),
    "e": ("naive NVFP4 DiffusionNFT (K-in-K at full steps, trained directly)", ["rollout.mode=direct", "rollout.candidates={k}", "rollout.explore.steps={full}"]),
}
TRAIN_COST = ("explore", "regenerate", "train")
# the paper's explore group (N = 4K: 96 seeds for 24 trained), which these arms were measured at;
# the shipped main job explores 2K (shapes.yaml)
PAPER_GROUP = ["rollout.candidates=32"]


def arm_config(arm: str, seed: int, budget: float, eval_points: int, sets: list[str]):
    """The arm's config, its iterations sized to the budget and its eval spacing to the budget's
    eval_points equal parts."""
    sets = [*PAPER_GROUP, *sets]
    base = load_config(overrides=sets)
    fill = {"k": base.selection.k, "full": base.rollout.regenerate.steps}
    # the curve is the training trajectory: the final eval is the last adapters', not the kept best's
    fixed = ["rollout.max_policy_lag=0", "train.keep_best=false", "eval.validation="]
    overrides = [*sets, f"seed={seed}", *(s.format(**fill) for s in ARMS[arm][1]), *fixed]
    config = load_config(overrides=overrides)
    per_iteration = sum(v for k, v in _iteration_cost(config).items() if k in TRAIN_COST)
    iterations = max(1, math.ceil(budget / per_iteration))
    every = max(1, iterations // eval_points)  # at least eval_points evals
    return load_config(overrides=[*overrides, f"train.iterations={iterations}", f"eval.every={every}"])


def _iteration_cost(config) -> dict[str, float]:
    k, n = config.selection.k, config.rollout.candidates
    groups = config.rollout.prompts_per_iteration
    return CostMeter(config).iteration({"candidates": groups * n, "regenerated": groups * k})


def curve(run: pathlib.Path) -> list[tuple[float, float, float]]:
    """(training cost so far, held-out preference, its s.e.) at the base and each eval point."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    report = json.loads((run / "eval.json").read_text())
    points = [(0.0, report["base_eval"]["preference"], report["base_eval"]["preference_se"])]
    for row in rows:
        if "eval" in row:
            spent = sum(row["modeled_cost_total"][k] for k in TRAIN_COST)
            points.append((spent, row["eval"]["preference"], row["eval"]["preference_se"]))
    spent = sum(rows[-1]["modeled_cost_total"][k] for k in TRAIN_COST)
    if points[-1][0] < spent:
        points.append((spent, report["final_eval"]["preference"], report["final_eval"]["preference_se"]))
    return points


def cost_to_reach(points: list[tuple[float, float, float]], target: float) -> float:
    """The cost at which the curve first reaches `target`, interpolated linearly; inf if never."""
    if points[0][1] >= target:
        return points[0][0]
    for (c0, y0, _), (c1, y1, _) in itertools.pairwise(points):
        if y1 >= target:
            return c0 + (target - y0) * (c1 - c0) / (y1 - y0)
    return math.inf


def bootstrap(values: list[float], rng: np.random.Generator, draws: int = 2000) -> tuple[float, float]:
    """95 % percentile interval of the mean over resampled seeds."""
    means = [np.mean(rng.choice(values, len(values))) for _ in range(draws)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize(root: pathlib.Path, arms: list[str], target_share: float, plot_path: pathlib.Path) -> str:
    """The RESULTS.md entry's body for the finished runs under `root`; draws the plot."""
    runs = {arm: sorted((root / arm).glob("seed-*")) for arm in arms}
    curves = {arm: [curve(r) for r in runs[arm] if (r / "eval.json").exists()] for arm in arms}
    curves = {arm: cs for arm, cs in curves.items() if cs}
    base = float(np.mean([c[0][1] for cs in curves.values() for c in cs]))
    finals = {arm: [c[-1][1] for c in cs] for arm, cs in curves.items()}
    target = base + target_share * (max(np.mean(f) for f in finals.values()) - base)
    rng = np.random.default_rng(0)
    reach = {arm: [cost_to_reach(c, target) for c in cs] for arm, cs in curves.items()}
    # an arm's iterations all cost the same, so its first run's total over its iterations
    per_iteration = {arm: cs[0][-1][0] / _iterations(runs[arm][0]) for arm, cs in curves.items()}
    rows, points = [], []
    for arm, cs in curves.items():
        finite = [r for r in reach[arm] if math.isfinite(r)]
        low, high = bootstrap(finite, rng) if len(finite) == len(cs) > 1 else (math.nan, math.nan)
        mean_reach = float(np.mean(reach[arm])) if len(finite) == len(cs) else math.inf
        points.append({
            "arm": arm, "seeds": len(cs), "cost_per_iteration": per_iteration[arm], "final_preference": float(np.mean(finals[arm])),
            "cost_to_target": mean_reach if math.isfinite(mean_reach) else None, "interval": [round(low), round(high)] if math.isfinite(low) else None,
            "seeds_reaching": len(finite), "eval_points": len(cs[0]) - 1,
        })
        rows.append([
            arm, ARMS[arm][0], len(cs), f"{per_iteration[arm]:.0f}", _mean_se(finals[arm]), f"{mean_reach:.0f}", f"[{low:.0f}, {high:.0f}]",
            f"{mean_reach / per_iteration[arm]:.1f}", f"{len(finite)}/{len(cs)}",
        ])
    lines = [f"Base preference {base:.4f}; target {target:.4f} ({target_share:.0%} of the best arm's final gain)."]
    ratios = {f"{arm}/d": (f"Cost to target, {arm}/d", reach[arm], reach["d"]) for arm in "abce" if arm in reach and "d" in reach}
    if "a" in reach and "d" in reach:
        iterations = {arm: [r / per_iteration[arm] for r in reach[arm]] for arm in ("a", "d")}
        ratios["ceiling a/d"] = ("Structural ceiling of a/d (a's iterations to target over d's)", iterations["a"], iterations["d"])
    if "a" in curves and "d" in curves:
        # the paper's own definition: DiffusionNFT's whole run against Sol-RL's cost to reach its final reward
        paper = float(np.mean(finals["a"]))
        whole = [c[-1][0] for c in curves["a"]]
        ratios["paper a/d"] = (f"Paper's definition (a's whole run over d's cost to a's mean final {paper:.4f}), a/d", whole, [cost_to_reach(c, paper) for c in curves["d"]])
    for name, (label, num, den) in ratios.items():
        line, value = _ratio(label, num, den, rng)
        lines.append(line)
        points.append({"ratio": name, "value": value[0], "interval": [round(v, 3) for v in value[1:]]} if value else {"ratio": name, "value": None})
    if "c" in finals and "d" in finals:
        low, high = _diff_interval(finals["c"], finals["d"], rng)
        lines.append(f"Plateau: final preference c - d = {np.mean(finals['c']) - np.mean(finals['d']):+.4f} (95 % bootstrap [{low:+.4f}, {high:+.4f}]).")
    plot = _plot(curves, target, plot_path)
    headers = ["arm", "what", "seeds", "cost per iteration", "final held-out preference (± s.e.)", "cost to target (BF16 calls)", "95 % interval", "iterations to target", "seeds reaching it"]
    bullets = "\n".join(f"- {line}" for line in lines)
    return f"{with_json_lines(headers, rows, points)}\n\n{bullets}\n\nPlot: [{plot.name}]({plot.name})"


def _iterations(run: pathlib.Path) -> int:
    return sum(1 for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip())


def _mean_se(values: list[float]) -> str:
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return f"{np.mean(values):.4f} ± {se:.4f}"


def ratio_interval(num: list[float], den: list[float], rng: np.random.Generator) -> tuple[float, float, float]:
    """mean(num) / mean(den) and its 95 % bootstrap interval, seeds resampled within each side."""
    draws = [np.mean(rng.choice(num, len(num))) / np.mean(rng.choice(den, len(den))) for _ in range(2000)]
    return float(np.mean(num) / np.mean(den)), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def _ratio(label: str, num: list[float], den: list[float], rng: np.random.Generator) -> tuple[str, tuple[float, float, float] | None]:
    """mean(num) / mean(den) with a 95 % bootstrap interval, seeds resampled within each arm: the
    line that says it, and (ratio, low, high) or None where it cannot be computed."""
    if not all(math.isfinite(r) for r in num + den):
        missed = sum(not math.isfinite(r) for r in num), sum(not math.isfinite(r) for r in den)
        return f"{label}: not all seeds reach it within the budget (missed: {missed[0]}/{len(num)} and {missed[1]}/{len(den)}).", None
    if min(den) == 0:
        return f"{label}: the denominator's arm starts at or above the target.", None
    ratio, low, high = ratio_interval(num, den, rng)
    return f"{label}: {ratio:.2f} (95 % bootstrap over seeds [{low:.2f}, {high:.2f}]).", (ratio, low, high)


def _diff_interval(x: list[float], y: list[float], rng: np.random.Generator) -> tuple[float, float]:
    draws = [np.mean(rng.choice(x, len(x))) - np.mean(rng.choice(y, len(y))) for _ in range(2000)]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def _plot(curves: dict, target: float, path: pathlib.Path) -> pathlib.Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for arm, cs in curves.items():
        # the eval points (the same costs for every seed of an arm: its iterations cost the same)
        grid = np.array([p[0] for p in cs[0] if p[0] <= min(c[-1][0] for c in cs)])
        ys = np.array([np.interp(grid, [p[0] for p in c], [p[1] for p in c]) for c in cs])
        mean = ys.mean(axis=0)
        se = ys.std(axis=0, ddof=1) / math.sqrt(len(cs)) if len(cs) > 1 else np.zeros_like(mean)
        ax.plot(grid, mean, marker="o", markersize=3, label=f"{arm}: {ARMS[arm][0]}")
        ax.fill_between(grid, mean - se, mean + se, alpha=0.2)
    ax.axhline(target, color="grey", linestyle="--", label="target")
    ax.set_xlabel("modeled GPU cost of training (BF16 calls)")
    ax.set_ylabel("held-out preference (mean ± s.e. over seeds)")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _train(root: pathlib.Path, arm: str, seed: int, budget: float, eval_points: int, sets: list[str], threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
    run = root / arm / f"seed-{seed}"
    shutil.rmtree(run, ignore_errors=True)  # an unfinished run starts over
    config = arm_config(arm, seed, budget, eval_points, sets)
    print(f"arm {arm} seed {seed}: {config.train.iterations} iterations, eval every {config.eval.every}", flush=True)
    LocalRun(config, run, log=lambda line: print(f"  {arm}{seed} {line}", flush=True)).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--budget", type=float, default=60000, help="modeled training cost per run, in BF16 calls")
    parser.add_argument("--eval-points", type=int, default=8)
    parser.add_argument("--target-share", type=float, default=0.8)
    parser.add_argument("--out", default="runs/convergence")
    parser.add_argument("--summarize", metavar="DIR", help="only analyse the finished runs under DIR")
    parser.add_argument("--plot", default=str(pathlib.Path(__file__).with_name("convergence.png")), help="where the curves' PNG goes (default: beside RESULTS.md)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one torch thread each when more than 1")
    parser.add_argument("--set", action="append", default=[], help="config overrides for every arm")
    args = parser.parse_args()
    root = pathlib.Path(args.summarize or args.out)
    if not args.summarize:
        # seed-major, so an interrupted sweep has whole seeds of every arm
        todo = [(arm, seed) for seed in args.seeds for arm in args.arms if not (root / arm / f"seed-{seed}" / "eval.json").exists()]
        if args.jobs == 1:
            for arm, seed in todo:
                _train(root, arm, seed, args.budget, args.eval_points, args.set, threads=0)
        else:
            # one torch thread per run: small GEMMs use a second thread poorly, a second run well
            spawn = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
                for done in [pool.submit(_train, root, arm, seed, args.budget, args.eval_points, args.set, 1) for arm, seed in todo]:
                    done.result()
    note = f"analysis of the finished runs under {root}" if args.summarize else f"budget {args.budget:g} BF16 calls, seeds {args.seeds}, overrides {args.set}"
    append_results("Convergence against modeled GPU cost", summarize(root, args.arms, args.target_share, pathlib.Path(args.plot)), notes=note)


if __name__ == "__main__":
    main()
