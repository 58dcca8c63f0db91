"""Is a run's end worse than its other late evals? A permutation test of issue 29's bar 3.

Bar 3 asks that the last policy's held-out accuracy be within one paired standard error of the
run's peak, the best of its eval points. On a curve that has stopped rising, the best of several
noisy points sits above a typical one, so the end can miss the bar without any drift. This asks
the question the bar is after: is the end lower than the run's other late points?

Under no drift, the points of the second half (from the half-way iteration on, the end included)
are exchangeable: the end is any one of them. So for each run this reads, over its late points,
how many are within one paired s.e. of the peak (the bar's own test, applied to each) and where
the end ranks among them (0: the lowest, 1: the highest, ties counted half). Over the runs given,
the observed count of ends that meet the bar and the mean rank of the ends are set against their
distribution when each run's end is replaced by one of its late points drawn at random (the exact
permutation null, drawn 200,000 times): a small p says the ends sit lower than late points do.

    python benchmarks/late_ends.py runs/strict/kls-seed-0 runs/strict/kls-seed-1 ... [--results]

Independent runs only (different seeds or settings); the end is the last adapters' eval.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from common import publish, with_json_lines
from learning_curve import _points

from solrl.toy_app.evaluate import accuracy_change

DRAWS = 200_000


def standing(run: pathlib.Path) -> dict:
    """Each late point's bar verdict (within one paired s.e. of the peak) and rank among the late
    points, the end's among them."""
    points = _points(run)
    peak = max((ev for _, _, ev in points[1:]), key=lambda ev: ev["accuracy"])
    late = [(it, ev) for it, _, ev in points if it >= points[-1][0] / 2]
    within = []
    for _, ev in late:
        change, se = accuracy_change(peak, ev)
        within.append(bool(-change <= se))
    acc = np.array([ev["accuracy"] for _, ev in late])
    ranks = [((acc < a).sum() + 0.5 * ((acc == a).sum() - 1)) / (len(acc) - 1) for a in acc]
    return {
        "run": run.name, "late_iterations": [it for it, _ in late], "within_one_se": within, "ranks": [round(float(r), 4) for r in ranks],
        "end_within_one_se": within[-1], "end_rank": round(float(ranks[-1]), 4), "late_share_within_one_se": round(sum(within) / len(within), 4),
    }  # fmt: skip


def permutation(standings: list[dict], draws: int = DRAWS, seed: int = 0) -> dict:
    """The ends' count within one s.e. of the peak and mean rank, against the same figures with each
    run's end replaced by one of its late points at random: one-sided p-values (at most as many
    within, a mean rank at most as high)."""
    rng = np.random.default_rng(seed)
    within = np.zeros(draws)
    rank = np.zeros(draws)
    for s in standings:
        pick = rng.integers(0, len(s["ranks"]), size=draws)
        within += np.asarray(s["within_one_se"], dtype=float)[pick]
        rank += np.asarray(s["ranks"])[pick]
    rank /= len(standings)
    observed = sum(s["end_within_one_se"] for s in standings)
    mean_rank = float(np.mean([s["end_rank"] for s in standings]))
    return {
        "runs": len(standings), "ends_within_one_se": int(observed), "expected_within_one_se": round(float(within.mean()), 2),
        "p_as_few_within": float((within <= observed + 1e-9).mean()), "end_mean_rank": round(mean_rank, 4),
        "expected_mean_rank": round(float(rank.mean()), 4), "p_rank_as_low": float((rank <= mean_rank + 1e-9).mean()), "draws": draws,
    }  # fmt: skip


def report(standings: list[dict], test: dict) -> str:
    headers = ["run", "late points (iterations)", "within one s.e. of the peak", "end within", "end's rank among them (0 lowest, 1 highest)"]
    rows = [[s["run"], " ".join(map(str, s["late_iterations"])), f"{sum(s['within_one_se'])} of {len(s['within_one_se'])}",
             "yes" if s["end_within_one_se"] else "no", f"{s['end_rank']:.2f}"] for s in standings]  # fmt: skip
    summary = (
        f"Ends within one paired s.e. of the peak: {test['ends_within_one_se']} of {test['runs']}, where a late point drawn at random "
        f"gives {test['expected_within_one_se']:.2f} (p of as few: {test['p_as_few_within']:.3f}). The ends' mean rank among the late points: "
        f"{test['end_mean_rank']:.3f}, where a random one gives {test['expected_mean_rank']:.3f} (p of as low: {test['p_rank_as_low']:.3f})."
    )
    return with_json_lines(headers, rows, standings) + "\n\n" + summary + "\n\n" + with_json_lines(["figure", "value"], [[k, v] for k, v in test.items()], [test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=pathlib.Path, help="finished run directories, independent of each other")
    parser.add_argument("--results", action="store_true", help="append the entry to benchmarks/RESULTS.md")
    args = parser.parse_args()
    standings = [standing(run) for run in args.runs]
    body = report(standings, permutation(standings))
    publish(f"Late ends: {len(standings)} runs' last policy against their other late evals (bar 3)", body, args.results)


if __name__ == "__main__":
    main()
