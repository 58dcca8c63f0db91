"""Two arms of finished runs compared eval by eval, paired: for each seed, arm A's held-out
accuracy against arm B's at every eval point (the same captions and seeds, so the difference
has a paired standard error), how far the two runs trained identically (the same loss on every
row), and the mean over seeds of the final difference with its standard error across seeds. With
--target, also each run's modeled cost to that held-out accuracy change (learning_curve.cost_to_target)
and A's cost over B's, per seed and as a mean over seeds with its standard error.

    python benchmarks/paired_runs.py --arms kls_pema kls --seeds 0 1 2 [--dir runs/strict] [--target 0.107] [--results]

Run directories are DIR/ARM-seed-S (benchmarks/strict_runs.py's layout). The final point is
each run's last adapters (eval.json's final_eval_last when train.keep_best kept another).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from common import publish, table, with_json_lines
from learning_curve import _points, _rows, cost_to_target

from solrl.toy_app.evaluate import accuracy_change


def identical_rows(a: pathlib.Path, b: pathlib.Path) -> int:
    """How many rows, from the first, the two runs' losses agree on exactly."""
    same = 0
    for row_a, row_b in zip(_rows(a), _rows(b), strict=False):
        if row_a.get("loss") != row_b.get("loss"):
            break
        same += 1
    return same


def compare(a: pathlib.Path, b: pathlib.Path, target: float | None = None) -> dict:
    """Per eval point (iterations trained, A's change from base, B's, A - B, its paired s.e.)."""
    points_a, points_b = _points(a), _points(b)
    base = points_a[0][2]
    rows = []
    for (it_a, _, eval_a), (it_b, _, eval_b) in zip(points_a[1:], points_b[1:], strict=True):
        if it_a != it_b:
            raise ValueError(f"{a.name} evaluated at iteration {it_a} where {b.name} did at {it_b}; compare runs with the same eval.every")
        diff, se = accuracy_change(eval_b, eval_a)
        rows.append(
            {
                "iteration": it_a,
                "a_change": accuracy_change(base, eval_a)[0],
                "b_change": accuracy_change(base, eval_b)[0],
                "a_minus_b": diff,
                "paired_se": se,
            }
        )
    pair = {"a": a.name, "b": b.name, "identical_rows": identical_rows(a, b), "points": rows}
    if target is not None:
        pair |= {"a_cost": cost_to_target(a, target)["cost_to_target"], "b_cost": cost_to_target(b, target)["cost_to_target"]}
    return pair


def cost_report(pairs: list[dict], target: float) -> tuple[str, list[dict]]:
    """The modeled cost to `target` of A and B per seed, and A's over B's (None: one never reached it)."""
    ratios = [p["a_cost"] / p["b_cost"] - 1 if p["a_cost"] and p["b_cost"] else None for p in pairs]
    cost = lambda c: f"{c:.0f}" if c else "not reached"  # noqa: E731
    cells = [[p["a"], p["b"], cost(p["a_cost"]), cost(p["b_cost"]), f"{r:+.1%}" if r is not None else "-"]
             for p, r in zip(pairs, ratios, strict=True)]  # fmt: skip
    known = np.array([r for r in ratios if r is not None])
    summary = {"target_change": target, "seeds_reached": len(known),
               "a_over_b_minus_1_mean": round(float(known.mean()), 4) if len(known) else None,
               "a_over_b_minus_1_se": round(float(known.std(ddof=1) / np.sqrt(len(known))), 4) if len(known) > 1 else None}  # fmt: skip
    text = f"Modeled cost to {target:+.3f} held-out accuracy\n\n" + table(["A", "B", "A's cost", "B's cost", "A / B - 1"], cells)
    if summary["a_over_b_minus_1_mean"] is not None:
        spread = f" ± {summary['a_over_b_minus_1_se']:.1%} (s.e. over seeds)" if summary["a_over_b_minus_1_se"] is not None else ""
        text += f"\n\nA / B - 1, mean over the {len(known)} seed(s) where both reached it: {summary['a_over_b_minus_1_mean']:+.1%}{spread}"
    lines = [summary, *({"a": p["a"], "b": p["b"], "a_cost": p["a_cost"], "b_cost": p["b_cost"], "a_over_b_minus_1": r}
                        for p, r in zip(pairs, ratios, strict=True))]  # fmt: skip
    return text + "\n\n", lines


def report(pairs: list[dict], target: float | None = None) -> str:
    headers = ["iterations", *[f"{p['a']} - {p['b']}" for p in pairs]]
    iterations = [point["iteration"] for point in pairs[0]["points"]]
    cell = "{a_change:+.3f} / {b_change:+.3f}: {a_minus_b:+.3f} ± {paired_se:.3f}"
    cells = [[it, *[cell.format(**p["points"][i]) for p in pairs]] for i, it in enumerate(iterations)]
    cells.append(["rows trained identically", *[str(p["identical_rows"]) for p in pairs]])
    finals = np.array([p["points"][-1]["a_minus_b"] for p in pairs])
    summary = {"a": pairs[0]["a"].split("-seed-")[0], "b": pairs[0]["b"].split("-seed-")[0], "seeds": len(pairs),
               "final_a_minus_b_mean": round(float(finals.mean()), 4),
               "final_a_minus_b_se": round(float(finals.std(ddof=1) / np.sqrt(len(finals))), 4) if len(finals) > 1 else None}  # fmt: skip
    lines = [{"a": p["a"], "b": p["b"], "identical_rows": p["identical_rows"]} | point for p in pairs for point in p["points"]]
    text = "Each cell: A's change from base / B's: A - B ± its paired s.e.\n\n" + table(headers, cells)
    spread = f" ± {summary['final_a_minus_b_se']:.3f} (s.e. over seeds)" if summary["final_a_minus_b_se"] is not None else ""
    text += f"\n\nFinal A - B, mean over {len(pairs)} seed(s): {summary['final_a_minus_b_mean']:+.3f}{spread}\n\n"
    if target is not None:
        costs, cost_lines = cost_report(pairs, target)
        text, lines = text + costs, [*cost_lines, *lines]
    return text + with_json_lines(
        ["A", "B", "final A - B"], [[summary["a"], summary["b"], f"{summary['final_a_minus_b_mean']:+.3f}"]], [summary, *lines]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs=2, required=True, metavar=("A", "B"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("runs/strict"))
    parser.add_argument("--target", type=float, help="also compare the modeled cost to this held-out accuracy change from the base")
    parser.add_argument("--results", action="store_true", help="append the entry to benchmarks/RESULTS.md (else print it)")
    args = parser.parse_args()
    pairs = [compare(args.dir / f"{args.arms[0]}-seed-{s}", args.dir / f"{args.arms[1]}-seed-{s}", args.target) for s in args.seeds]
    body = report(pairs, args.target)
    publish(f"Paired: {args.arms[0]} against {args.arms[1]}, seeds {args.seeds}", body, args.results)


if __name__ == "__main__":
    main()
