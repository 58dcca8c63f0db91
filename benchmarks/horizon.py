"""How the main job's two figures move with its length: the shipped config trained for longer
than its 16 iterations, with a validation eval every few iterations, on screening seeds.

Each run is `solrl train --local` with shapes.yaml and only its length and evals changed; every
eval measures the validation captions (solrl/toy/prompts/validation.txt, 16 images each,
best-of-32 for the base), never the held-out captions main_job.py reports. At each eval point the
table gives, per seed, the share of the base-to-best-of-32 preference gap closed and the strict
accuracy change from the base with its paired standard error (the same captions and seeds), then
the mean over seeds with its standard error across them; one JSON line a point. Finished runs (an
eval.json in OUT/seed-S) are read back, not rerun; `--jobs` runs seeds side by side, one torch
thread each; `--ray` runs as the main job does (Ray, lag 1) instead of synchronously.

    python benchmarks/horizon.py [--seeds 10 11 12] [--iterations 64] [--every 8] [--jobs 3] [--ray] [--set key=value ...] [--out runs/horizon]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from common import append_results, with_json_lines
from main_job import mean_se

from solrl.toy_app.evaluate import accuracy_change

VALIDATION = ["eval.prompts=validation", "eval.validation=", "eval.n=16"]


def train(run: pathlib.Path, seed: int, args: argparse.Namespace, threads: int | None) -> pathlib.Path:
    if (run / "eval.json").is_file():
        return run
    shutil.rmtree(run, ignore_errors=True)  # train refuses a non-empty --out
    sets = [*VALIDATION, *args.set, f"seed={seed}", f"train.iterations={args.iterations}", f"eval.every={args.every}"]
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    with open(run.with_suffix(".log"), "w") as log:
        where = [] if args.ray else ["--local"]
        command = [sys.executable, "-m", "solrl.cli", "train", *where, "--out", str(run), *[a for s in sets for a in ("--set", s)]]
        subprocess.run(command, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return run


def curve(run: pathlib.Path) -> dict[int, tuple[float, float, float]]:
    """iteration -> (gap closed, accuracy change, its paired s.e.) at each periodic eval, and the last."""
    report = json.loads((run / "eval.json").read_text())
    base = report["base_eval"]
    best = base["best_of"]["preference"]
    evals = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval" in row:
            evals[row["iteration"] + 1] = row["eval"]
    evals.setdefault(report["iterations"], report["final_eval"])  # keep_best's final may be an earlier eval
    out = {}
    for it, ev in sorted(evals.items()):
        change, se = accuracy_change(base, ev)
        out[it] = ((ev["preference"] - base["preference"]) / (best - base["preference"]), change, se)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    parser.add_argument("--iterations", type=int, default=64)
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (each at one torch thread when > 1)")
    parser.add_argument("--ray", action="store_true", help="run as the main job does (Ray, lag 1) instead of --local (synchronous)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a change to shapes.yaml")
    parser.add_argument("--out", default="runs/horizon")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = 1 if args.jobs > 1 else None
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda s: train(out / f"seed-{s}", s, args, threads), args.seeds))
    curves = [curve(r) for r in runs]
    rows, points = [], []
    for it in sorted(set.intersection(*(set(c) for c in curves))):
        gaps, changes = [c[it][0] for c in curves], [c[it][1] for c in curves]
        (gap, gap_se), (change, change_se) = mean_se(gaps), mean_se(changes)
        per_seed = ", ".join(f"{c[it][0]:.2f} / {c[it][1]:+.3f} ± {c[it][2]:.3f}" for c in curves)
        rows.append([it, f"{gap:.2f} ± {gap_se:.2f}", f"{change:+.3f} ± {change_se:.3f}", f"{min(changes):+.3f}", per_seed])
        points.append({
            "iterations": it, "seeds": args.seeds, "gap_closed": gap, "accuracy_change": change,
            "accuracy_change_se": change_se, "worst_accuracy_change": min(changes),
        })
    headers = [
        "iterations", "gap closed (mean ± s.e.)", "strict accuracy change (mean ± s.e.)", "worst seed",
        "per seed: gap / change ± paired s.e.",
    ]
    append_results(
        f"The shipped config{' with ' + ', '.join(args.set) if args.set else ''} past 16 iterations "
        f"({'Ray' if args.ray else '--local'}, {len(args.seeds)} screening seeds, validation captions)",
        with_json_lines(headers, rows, points),
        "shapes.yaml with train.iterations, eval.every and the --set changes; evals on the validation captions "
        "(20 training captions that are not eval captions, 16 fixed seeds each, best-of-32 on 20 x 32), never on the "
        "held-out captions main_job.py reports; ± across seeds is the standard error over run seeds",
    )


if __name__ == "__main__":
    main()
