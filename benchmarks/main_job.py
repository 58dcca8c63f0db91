"""The README's main job (`solrl train`: Ray, the shipped shapes.yaml) on several run seeds, and
its bar: over the seeds, the final EMA policy closes on average at least 40 % of the gap between
the base model's mean size preference and its best-of-32 preference on the held-out captions;
strict accuracy changes by -0.01 or more on average and by no less than -0.04 on any seed (paired,
the same captions and image seeds before and after); each run takes at most 10 minutes of wall time.

Each seed runs `solrl train --out OUT/seed-S --set seed=S` in a subprocess, one after another, so
each has the machine to itself; already finished runs (an eval.json in their folder) are read,
not rerun. Prints one row per seed and appends the table to RESULTS.md.

    python benchmarks/main_job.py [--seeds 0 1 2 3 4] [--out runs/main-job] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

from common import append_results, with_json_lines


def run(out: pathlib.Path, seed: int, overrides: list[str]) -> tuple[dict, float | None]:
    """eval.json of the run in `out` (run now unless it finished before) and its wall seconds
    (None when it was read back)."""
    report = out / "eval.json"
    if report.is_file():
        return json.loads(report.read_text()), None
    shutil.rmtree(out, ignore_errors=True)  # a run that did not finish starts over (train refuses a non-empty --out)
    start = time.perf_counter()
    sets = [a for s in [f"seed={seed}", *overrides] for a in ("--set", s)]
    subprocess.run([sys.executable, "-m", "solrl.cli", "train", "--out", str(out), *sets], check=True)
    return json.loads(report.read_text()), time.perf_counter() - start


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean over run seeds and its standard error across them (nan for one seed)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", default="runs/main-job")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="the main job", help="what the table is of (e.g. a variant's name)")
    args = parser.parse_args()
    rows, points, closed_all, changes, slow = [], [], [], [], []
    for seed in args.seeds:
        report, seconds = run(pathlib.Path(args.out) / f"seed-{seed}", seed, args.set)
        base, ema, policy = report["base_eval"], report["final_eval"], report["final_eval_policy"]
        closed, change = report["preference_gap_closed"], ema["accuracy"] - base["accuracy"]
        closed_all.append(closed if closed is not None else float("nan"))
        changes.append(change)
        if seconds is not None and seconds > 600:
            slow.append(seed)
        rows.append([
            seed,
            f"{base['preference']:.3f} ± {base['preference_se']:.3f}",
            f"{base['best_of']['preference']:.3f}",
            f"{ema['preference']:.3f} ± {ema['preference_se']:.3f}",
            f"{policy['preference']:.3f} ± {policy['preference_se']:.3f}",
            f"{closed:.2f}" if closed is not None else "-",
            f"{report['preference_gap_closed_policy']:.2f}" if report.get("preference_gap_closed_policy") is not None else "-",
            f"{base['accuracy']:.3f} ± {base['accuracy_se']:.3f}",
            f"{ema['accuracy']:.3f} ± {ema['accuracy_se']:.3f}",
            f"{change:+.3f}" + (f" ± {report['accuracy_change_se']:.3f}" if "accuracy_change_se" in report else ""),
            f"{ema['score']:.3f} ± {ema['score_se']:.3f}",
            f"{report['seconds']:.0f}",
            f"{seconds:.0f}" if seconds is not None else "-",
        ])
        points.append({
            "seed": seed, "gap_closed": closed, "accuracy_change": change, "accuracy_change_se": report.get("accuracy_change_se"),
            "run_s": report["seconds"], "wall_s": seconds,
        })
    (gap, gap_se), (change, change_se) = mean_se(closed_all), mean_se(changes)
    met = gap >= 0.40 and change >= -0.01 and min(changes) >= -0.04 and not slow
    summary = (
        f"Over the {len(args.seeds)} seed(s) (± s.e. across seeds): gap closed {gap:.2f} ± {gap_se:.2f} (bar >= 0.40), "
        f"strict accuracy change {change:+.3f} ± {change_se:.3f} (bar >= -0.01), worst seed {min(changes):+.3f} (bar >= -0.04), "
        f"runs over 600 s: {slow or 'none'}; bar {'met' if met else 'not met'}."
    )
    points.append({
        "seeds": args.seeds, "gap_closed": gap, "gap_closed_se": gap_se, "accuracy_change": change,
        "accuracy_change_se": change_se, "worst_accuracy_change": min(changes), "bar_met": met,
    })
    headers = [
        "seed", "base preference", "base best-of-32", "final EMA preference", "final raw policy preference", "gap closed (EMA)",
        "gap closed (policy)", "base strict accuracy", "final EMA strict accuracy",
        "strict accuracy change (paired s.e.)", "final EMA caption score", "run s", "wall s",
    ]
    append_results(
        f"{args.label[0].upper() + args.label[1:]} on {len(args.seeds)} seed(s): bar {'met' if met else 'not met'}",
        summary + "\n\n" + with_json_lines(headers, rows, points),
        "held-out captions (63 x 8 fixed seeds, best-of-32 on 63 x 32); ± is the standard error over seeds of the eval; "
        "the change's paired s.e. compares the same captions and seeds before and after; "
        "run s is eval.json's (the driver, every eval "
        "included), wall s the whole command with Ray's start-up ('-': a finished run read back)",
    )


if __name__ == "__main__":
    main()
