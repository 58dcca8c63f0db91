"""The README's main job (`solrl train`: Ray, the shipped shapes.yaml) on several run seeds, and
its bar: the final EMA policy closes at least 30 % of the gap between the base model's mean size
preference and its best-of-32 preference on the held-out captions, with strict accuracy no more
than 0.02 below the base's, in at most 10 minutes of wall time.

Each seed runs `solrl train --out OUT/seed-S --set seed=S` in a subprocess, one after another, so
each has the machine to itself; already finished runs (an eval.json in their folder) are read,
not rerun. Prints one row per seed and appends the table to RESULTS.md.

    python benchmarks/main_job.py [--seeds 0 1 2] [--out runs/main-job] [--set key=value ...]
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

from common import append_results, table


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


def across_seeds(changes: list[float]) -> str:
    """The strict-accuracy change's mean over run seeds, with its standard error across them."""
    mean = statistics.fmean(changes)
    se = statistics.stdev(changes) / len(changes) ** 0.5 if len(changes) > 1 else float("nan")
    return f"Strict accuracy change over the {len(changes)} seed(s): {mean:+.3f} ± {se:.3f} (s.e. across seeds)."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/main-job")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="the main job", help="what the table is of (e.g. a variant's name)")
    args = parser.parse_args()
    rows, met, changes = [], 0, []
    for seed in args.seeds:
        report, seconds = run(pathlib.Path(args.out) / f"seed-{seed}", seed, args.set)
        base, ema, policy = report["base_eval"], report["final_eval"], report["final_eval_policy"]
        closed, drop = report["preference_gap_closed"], base["accuracy"] - ema["accuracy"]
        ok = closed is not None and closed >= 0.30 and drop <= 0.02 and (seconds is None or seconds <= 600)
        met += ok
        change = f"{-drop:+.3f}" + (f" ± {report['accuracy_change_se']:.3f}" if "accuracy_change_se" in report else "")
        changes.append(-drop)
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
            change,
            f"{ema['score']:.3f} ± {ema['score_se']:.3f}",
            f"{report['seconds']:.0f}",
            f"{seconds:.0f}" if seconds is not None else "-",
            "yes" if ok else "no",
        ])
    headers = [
        "seed", "base preference", "base best-of-32", "final EMA preference", "final raw policy preference", "gap closed (EMA)",
        "gap closed (policy)", "base strict accuracy", "final EMA strict accuracy",
        "strict accuracy change (paired s.e.)", "final EMA caption score", "run s", "wall s", "bar met",
    ]
    append_results(
        f"{args.label[0].upper() + args.label[1:]} on {len(args.seeds)} seed(s): bar met on {met} of {len(args.seeds)}",
        table(headers, rows) + "\n\n" + across_seeds(changes),
        "held-out captions (63 x 8 fixed seeds, best-of-32 on 63 x 32); ± is the standard error over seeds of the eval; "
        "the change's paired s.e. compares the same captions and seeds before and after; "
        "bar: gap closed >= 0.30, strict accuracy no more than 0.02 below the base's and wall s <= 600; run s is eval.json's (the driver, every eval "
        "included), wall s the whole command with Ray's start-up ('-': a finished run read back)",
    )


if __name__ == "__main__":
    main()
