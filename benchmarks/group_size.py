"""The selection mechanism on its own: iterations to a target against the explore group size N.

K seeds a prompt are trained each iteration (shapes.yaml's selection.k); each prompt explores N
seeds in BF16 at the full step count and the K most contrastive are trained on directly (the
convergence benchmark's arm b). N = K is DiffusionNFT (every seed trained); N = 2K, 4K, 8K select
ever more sharply. Every run has the same iterations, so the x axis is iterations, not cost: this
is how much each iteration gains from selection, the number to set beside the paper's (on SD3.5-L,
its per-iteration times and 4.64x imply Sol-RL needed about 5-6x fewer iterations than
DiffusionNFT 24-in-24). Per target (by default 50 % and 80 % of the
best N's final gain) and N: the final held-out preference, the iterations to the target with a 95 %
bootstrap interval over seeds, and N = K's iterations over this N's (a lower bound, counting a
seed's run length, where N = K misses the target within the run on some seed); then one JSON line
per target and N.

    python benchmarks/group_size.py [--multiples 1 2 4 8] [--seeds 0 1 2 3 4] [--iterations 32] [--target-shares 0.5 0.8] [--jobs 2]

Runs go to --out (default runs/group-size/N-n/seed-S) and are reused when finished.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import pathlib
import shutil

import numpy as np
from common import append_results, with_json_lines
from convergence import _iterations, bootstrap, cost_to_reach, curve, ratio_interval

from solrl.config import load_config
from solrl.local_run import LocalRun

BF16_DIRECT = ["rollout.mode=direct", "rollout.explore_precision=bf16", "rollout.max_policy_lag=0"]


def group_config(n: int, seed: int, iterations: int, eval_points: int, sets: list[str]):
    base = load_config(overrides=sets)
    return load_config(overrides=[
        *sets, *BF16_DIRECT, f"rollout.explore.steps={base.rollout.regenerate.steps}", f"rollout.candidates={n}", f"seed={seed}",
        f"train.iterations={iterations}", f"eval.every={max(1, round(iterations / eval_points))}",
    ])


def _train(run: pathlib.Path, n: int, seed: int, iterations: int, eval_points: int, sets: list[str], threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
    shutil.rmtree(run, ignore_errors=True)  # an unfinished run starts over
    LocalRun(group_config(n, seed, iterations, eval_points, sets), run, log=lambda line: print(f"  N={n} seed {seed} {line}", flush=True)).run()


def by_iteration(run: pathlib.Path) -> list[tuple[float, float, float]]:
    """The run's curve with iterations, not cost, on its x axis."""
    points = curve(run)
    per_iteration = points[-1][0] / _iterations(run)
    return [(c / per_iteration, y, se) for c, y, se in points]


def summarize(root: pathlib.Path, groups: list[int], k: int, shares: list[float], iterations: int) -> str:
    curves = {n: [by_iteration(r) for r in sorted((root / f"N-{n}").glob("seed-*")) if (r / "eval.json").exists()] for n in groups}
    curves = {n: cs for n, cs in curves.items() if cs}
    base = float(np.mean([c[0][1] for cs in curves.values() for c in cs]))
    finals = {n: [c[-1][1] for c in cs] for n, cs in curves.items()}
    best = max(np.mean(f) for f in finals.values())
    rng = np.random.default_rng(0)
    rows, points = [], []
    for share in shares:
        target = base + share * (best - base)
        reach = {n: [cost_to_reach(c, target) for c in cs] for n, cs in curves.items()}
        for n, cs in curves.items():
            finite = [r for r in reach[n] if math.isfinite(r)]
            mean = float(np.mean(reach[n])) if len(finite) == len(cs) else math.inf
            low, high = bootstrap(finite, rng) if len(finite) == len(cs) > 1 else (math.nan, math.nan)
            se = float(np.std(finals[n], ddof=1) / math.sqrt(len(cs))) if len(cs) > 1 else math.nan
            ratio, speedup, bound = (math.nan,) * 3, "-", None
            if k in reach and all(math.isfinite(r) and r > 0 for r in reach[n]) and min(reach[k]) > 0:
                if all(math.isfinite(r) for r in reach[k]):
                    ratio = ratio_interval(reach[k], reach[n], rng)
                    speedup = f"{ratio[0]:.2f} [{ratio[1]:.2f}, {ratio[2]:.2f}]"
                else:  # N = K missed it on some seed within the run: count those seeds at the run's length, a lower bound
                    bound = float(np.mean([min(r, iterations) for r in reach[k]]) / np.mean(reach[n]))
                    speedup = f"at least {bound:.2f}"
            rows.append([f"{share:.0%} ({target:.4f})", n, f"{n // k}K", len(cs), f"{np.mean(finals[n]):.4f} ± {se:.4f}", f"{mean:.1f}", f"[{low:.1f}, {high:.1f}]", f"{len(finite)}/{len(cs)}", speedup])
            finite_or_none = lambda v: v if math.isfinite(v) else None  # JSON has no inf or NaN
            points.append({
                "target_share": share, "target": target, "n": n, "k": k, "seeds": len(cs), "final_preference": float(np.mean(finals[n])),
                "iterations_to_target": finite_or_none(mean), "interval": [finite_or_none(low), finite_or_none(high)],
                "fewer_iterations_than_n_eq_k": finite_or_none(ratio[0]), "ratio_interval": [finite_or_none(ratio[1]), finite_or_none(ratio[2])],
                "fewer_iterations_than_n_eq_k_at_least": bound,
            })
    headers = ["target (share of the best N's final gain)", "N", "N / K", "seeds", "final held-out preference (± s.e.)", "iterations to target",
               "95 % interval", "seeds reaching it", "iterations at N = K over these [95 %]"]
    return f"Base preference {base:.4f}; the best N's final {best:.4f}.\n\n" + with_json_lines(headers, rows, points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--multiples", nargs="+", type=int, default=[1, 2, 4, 8], help="N as multiples of K")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--iterations", type=int, default=32)
    parser.add_argument("--eval-points", type=int, default=8)
    parser.add_argument("--target-shares", nargs="+", type=float, default=[0.5, 0.8], help="targets as shares of the best N's final gain")
    parser.add_argument("--out", default="runs/group-size")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one torch thread each when more than 1")
    parser.add_argument("--set", action="append", default=[], help="config overrides for every run")
    args = parser.parse_args()
    root, k = pathlib.Path(args.out), load_config(overrides=args.set).selection.k
    groups = [m * k for m in args.multiples]
    todo = [(n, s) for s in args.seeds for n in groups if not (root / f"N-{n}" / f"seed-{s}" / "eval.json").exists()]
    work = [(root / f"N-{n}" / f"seed-{s}", n, s, args.iterations, args.eval_points, args.set) for n, s in todo]
    if args.jobs == 1:
        for job in work:
            _train(*job, threads=0)
    else:
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in [pool.submit(_train, *job, 1) for job in work]:
                done.result()
    append_results(
        f"Iterations to target against the explore group size N (K = {k}, BF16, selected seeds trained directly)",
        summarize(root, groups, k, args.target_shares, args.iterations),
        f"{args.iterations} iterations a run, held-out evals every {max(1, round(args.iterations / args.eval_points))}; seeds {args.seeds}; overrides {args.set}",
    )


if __name__ == "__main__":
    main()
