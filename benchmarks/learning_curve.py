"""Learning curves of finished shapes runs: held-out eval accuracy at every `eval.every` point
and the mean proxy reward of all explored candidates (the policy's own reward on train prompts)
over the iterations before it.

    solrl train --local --out runs/long --set train.iterations=80 --set eval.every=20
    python benchmarks/learning_curve.py runs/long [more run dirs]

The compositional target (the strict GenEval-style check as the only reward; 160 iterations are
about an hour alone on two CPU cores):

    solrl train --local --out runs/strict --set 'reward=[{name: shapes_strict, weight: 1}]' \
        --set train.iterations=160 --set eval.every=20

Drift: after each run's curve, its last policy's held-out accuracy against the curve's peak, with
the paired standard error of the difference (the same captions and seeds), and whether the end is
within one of them of the peak; and the trend of the second half (each caption's slope over the
eval points from the half-way iteration on, averaged), which a flat but noisy curve does not bias
the way the best of several eval points does; a JSON line a run. (The peak is read off the held-out evals: a
diagnosis of drift, not a choice of what to report; train.keep_best chooses on validation prompts.)

Explore precision chosen online (rollout.precision_control): each row also says which precisions
explore ran at since the previous row and the mean Spearman of the audited (unselected) seeds, and
after the curves a table gives, per run, the modeled GPU cost (solrl.cost, audit included) at which
held-out accuracy first reaches a target change from the base (--target; default 80 % of the
smallest peak among the runs, so that every run reaches it), the switches made, and the share of
iterations whose audited agreement was at or above the controller's floor. A run with the controller
is also priced without its audit's own work (regenerations and previews made for the audit alone):
up to its first move that is exactly the same run without the controller, since the audit never
trains, so where the target comes before any move the controller's extra cost is read off one run.
To compare a run with the controller against one without, give both:

    solrl train --local --out runs/strict-pc --set 'reward=[{name: shapes_strict, weight: 1}]' \
        --set train.iterations=160 --set eval.every=20 --set 'rollout.precision_control={}'
    python benchmarks/learning_curve.py runs/strict runs/strict-pc

Each run is labelled by how its config.yaml differs from the shipped configs/shapes.yaml.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import numpy as np
import yaml
from common import append_results, table, with_json_lines

from solrl.config import load_config
from solrl.cost import CostMeter
from solrl.stats import stratified_mean
from solrl.toy.captions import parse_caption
from solrl.toy_app.evaluate import accuracy_change

SHORT = {"single_object": "single", "two_object": "two", "counting": "count", "colors": "colors", "position": "pos", "color_attr": "attr"}


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def label(run: pathlib.Path) -> str:
    """The run's settings that differ from the shipped shapes config, as key=value."""
    shipped = _flat(load_config().model_dump(mode="json"))
    own = _flat(yaml.safe_load((run / "config.yaml").read_text()))
    diff = [f"{k}={v}" for k, v in sorted(own.items()) if shipped.get(k) != v]
    return ", ".join(diff) or "shipped config"


def _mean(window: list[dict], key: str) -> str:
    """The window's mean of `key`, over the rows that have a number for it."""
    values = [r[key] for r in window if isinstance(r.get(key), int | float) and not math.isnan(r[key])]
    return f"{sum(values) / len(values):.3g}" if values else "-"


def _rows(run: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _points(run: pathlib.Path) -> list[tuple[int, float, dict]]:
    """(iterations trained, run seconds, eval) at the base, each periodic eval and the end (the
    last adapters' eval when train.keep_best kept another)."""
    rows, final = _rows(run), json.loads((run / "eval.json").read_text())
    points = [(0, 0.0, final["base_eval"])]
    points += [(r["iteration"] + 1, r["elapsed"], r["eval"]) for r in rows if "eval" in r]
    points.append((len(rows), final.get("seconds", rows[-1]["elapsed"]), final.get("final_eval_last", final["final_eval"])))
    return points


def _cost(rows: list[dict], iterations: int) -> float:
    """Modeled GPU cost of training (BF16 calls: explore, regenerate and train, the explore
    audit's previews and regenerations included; evals left out) of the first `iterations`."""
    return float(sum(rows[iterations - 1]["modeled_cost_total"][k] for k in ("explore", "regenerate", "train"))) if iterations else 0.0


def _precisions(window: list[dict]) -> str:
    """The explore precisions of a window's iterations, in order, and its switches."""
    seen = [r["audit"]["precision"] for r in window if "audit" in r]
    if not seen:
        return "-"
    order = list(dict.fromkeys(seen))
    switches = sum(1 for r in window if "switch" in r.get("audit", {}))
    return " -> ".join(order) + (f" ({switches} switch{'es' if switches > 1 else ''})" if switches else "")


def curve(run: pathlib.Path) -> list[list[object]]:
    """One row per eval point: iteration, seconds, modeled cost so far, held-out accuracy ± s.e., its paired
    change from the base, score, per task, then over the iterations since the previous point: means of the
    proxy reward, the learner's KL to the base model, its weight (train.nft.kl_target adapts it), the learning rate and gradient norm (before clipping), the preview's
    Spearman against BF16 on the selected seeds and on the audited ones, and the explore precisions."""
    rows = _rows(run)
    out, start, base = [], 0, _points(run)[0][2]
    for iteration, seconds, ev in _points(run):
        window = rows[start:iteration]
        tasks = " ".join(f"{SHORT.get(k, k)} {v:.2f}" for k, v in ev["per_task"].items())
        change, se = accuracy_change(base, ev)
        audited = _mean([r["audit"] for r in window if "audit" in r], "spearman")
        out.append([iteration, f"{seconds:.0f}", f"{_cost(rows, iteration):.0f}", f"{ev['accuracy']:.3f} ± {ev['accuracy_se']:.3f}", f"{change:+.3f} ± {se:.3f}",
                    f"{ev['score']:.3f}", tasks, *[_mean(window, key) for key in ("proxy_reward_mean", "kl", "kl_weight", "lr", "grad_norm", "spearman")], audited, _precisions(window)])  # fmt: skip
        start = iteration
    return out


def _unaudited_costs(run: pathlib.Path, rows: list[dict]) -> list[float]:
    """The run's cumulative modeled training cost with the explore audit's own work (its
    regenerations and previews at other rungs) left out, priced by solrl.cost from the rows. Up
    to the controller's first move the run trains as one without the controller does (the audit
    never trains), so up to there this is that run's cost, exactly."""
    meter, total, out = CostMeter(load_config(run / "config.yaml")), 0.0, []
    for r in rows:
        a = r.get("audit", {})
        spent = meter.iteration(r | {"audit": {k: a[k] for k in ("precision", "explored") if k in a}})
        total += sum(spent[k] for k in ("explore", "regenerate", "train"))
        out.append(total)
    return out


def _reached(changes: list[tuple[float, float]], target: float) -> float | None:
    """The cost at which (cost, accuracy change) points first reach `target`, linear between them."""
    for (c0, y0), (c1, y1) in zip([(0.0, -math.inf), *changes], changes, strict=False):
        if y1 >= target:
            return c0 + (target - y0) * (c1 - c0) / (y1 - y0) if math.isfinite(y0) else c1
    return None


def cost_to_target(run: pathlib.Path, target: float) -> dict:
    """The modeled cost at which held-out accuracy first reaches `target` change from the base
    (linear between eval points; None if it never does), and what the explore controller did;
    for a run with the controller, also that cost with the audit's own work left out, where the
    target came before its first move (None otherwise): what the same run without the controller costs."""
    rows, points = _rows(run), _points(run)
    base = points[0][2]
    changes = [(_cost(rows, it), accuracy_change(base, ev)[0]) for it, _, ev in points]
    reached = _reached(changes, target)
    plain, without = _unaudited_costs(run, rows), None
    if any("audit" in r for r in rows):
        first_move = next((r["iteration"] + 1 for r in rows if "switch" in r.get("audit", {})), len(rows))
        before = [(plain[it - 1] if it else 0.0, change) for (it, _, _), (_, change) in zip(points, changes, strict=True) if it <= first_move]
        without = _reached(before, target)
    audits = [r["audit"] for r in rows if "audit" in r]
    floor = (yaml.safe_load((run / "config.yaml").read_text())["rollout"].get("precision_control") or {}).get("floor")
    above = [a["spearman"] >= floor for a in audits if floor is not None and a.get("spearman") == a.get("spearman") and a.get("spearman") is not None]
    return {
        "run": run.name, "target_change": target, "cost_to_target": reached, "cost_to_target_without_audit": without, "total_cost": _cost(rows, len(rows)),
        "switches": [f"{a['switch']['from']} -> {a['switch']['to']} at {r['iteration'] + 1}" for r in rows if "switch" in (a := r.get("audit", {}))],
        "share_at_or_above_floor": sum(above) / len(above) if above else None, "floor": floor,
    }  # fmt: skip


def peak_change(run: pathlib.Path) -> float:
    points = _points(run)
    return max(accuracy_change(points[0][2], ev)[0] for _, _, ev in points)


def late_trend(points: list[tuple[int, float, dict]]) -> tuple[float, float, int]:
    """Held-out accuracy's trend over the run's second half, per 100 iterations: each caption's
    least-squares slope over the eval points from the half-way iteration on (the same captions and
    seeds at each point, so a caption is its own control), averaged by task as the accuracy is;
    with its standard error over captions, and the number of points. Unlike the end against the
    best of several noisy points, it is not biased downward on a flat curve."""
    late = [(it, ev) for it, _, ev in points if it >= points[-1][0] / 2]
    t = np.array([it for it, _ in late], dtype=float)
    captions = list(late[0][1]["per_caption"])
    y = np.array([[ev["per_caption"][c] for _, ev in late] for c in captions])
    slopes = (y - y.mean(axis=1, keepdims=True)) @ (t - t.mean()) / float(((t - t.mean()) ** 2).sum())
    mean, se = stratified_mean(100 * slopes, [parse_caption(c).task for c in captions])
    return round(mean, 4), round(se, 4), len(late)


def validation_rewards(run: pathlib.Path) -> dict[int, float]:
    """{iterations trained: the EMA's mean reward on eval.validation} at each periodic eval and the
    end: what train.keep_best chooses by ({} for a run without validation evals)."""
    rows, final = _rows(run), json.loads((run / "eval.json").read_text())
    out = {r["iteration"] + 1: r["validation"]["reward"] for r in rows if "validation" in r}
    if out and "kept" in final:
        out[len(rows)] = final["kept"]["last_validation_reward"]
    return out


def drift(run: pathlib.Path) -> dict:
    """The run's last policy (its lora/last/ when train.keep_best kept another) against its best
    eval point, and the second half's trend. The best point read off the held-out evals is the
    highest of several noisy figures, so a flat curve's end falls short of it by chance; the
    eval point with the best validation reward (the one train.keep_best keeps, chosen on other
    captions) is also compared, its held-out figure not selected on."""
    points = _points(run)
    base, last = points[0][2], points[-1][2]
    peak_at, _, peak = max(points[1:], key=lambda p: p[2]["accuracy"])
    change, se = accuracy_change(peak, last)
    slope, slope_se, n = late_trend(points)
    validation, held_out = validation_rewards(run), {it: ev for it, _, ev in points}
    chosen = max(validation, key=validation.get) if validation else None  # the earliest of ties, as keep_best
    vs_chosen = accuracy_change(held_out[chosen], last) if chosen is not None else (math.nan, math.nan)
    return {
        "run": run.name, "peak_iteration": peak_at, "peak_change_from_base": accuracy_change(base, peak)[0],
        "final_change_from_base": accuracy_change(base, last)[0], "final_minus_peak": change, "paired_se": se, "within_one_se": bool(-change <= se),
        "late_slope_per_100": slope, "late_slope_se": slope_se, "late_points": n, "late_decline": bool(slope + 2 * slope_se < 0),
        "validation_best_iteration": chosen, "validation_best_change_from_base": accuracy_change(base, held_out[chosen])[0] if chosen is not None else None,
        "final_minus_validation_best": vs_chosen[0], "validation_best_paired_se": vs_chosen[1], "within_one_se_of_validation_best": bool(-vs_chosen[0] <= vs_chosen[1]),
    }  # fmt: skip


NOTES = (
    "held-out = 63 eval captions x 8, fp32 10 Euler steps, seed 1234, on the evaluation EMA (± the eval's standard error over "
    "its seeds; the change pairs the same captions and seeds with the base eval); the last row is the "
    "run's final eval (of the last adapters); modeled cost is solrl.cost's BF16 calls of training so far (evals left out); the columns from proxy mean on are over the "
    "iterations since the previous row: means of proxy = the explore preview's reward of every explored candidate (train "
    "prompts, current policy), the learner's KL term mean((v_theta - v_ref)^2), its weight, the learning rate "
    "(train.optim.schedule; '-': a run from before rows carried it), its gradient norm before clipping, the "
    "preview's Spearman against the BF16 reward on the selected seeds and on the audited ones (rollout.precision_control), "
    "and the precisions explore ran at; run s is wall time inside the run, so it depends on what else shared the machine"
)


def report(runs: list[pathlib.Path], target: float | None = None) -> str:
    """The RESULTS.md entry's body: each run's curve, the drift table, the cost-to-target table."""
    headers = ["iterations", "run s", "modeled cost", "held-out accuracy (EMA)", "change from base (paired s.e.)", "score", "per task", "proxy mean", "KL to base", "KL weight",
               "learning rate", "grad norm", "preview Spearman", "audited Spearman", "explore precision"]  # fmt: skip
    body, drifts = [], [drift(run) for run in runs]
    for run in runs:
        body.append(f"{run.name}: {label(run)}\n\n" + table(headers, curve(run)))
    drift_rows = [[d["run"], d["peak_iteration"], f"{d['peak_change_from_base']:+.3f}", f"{d['final_change_from_base']:+.3f}",
                   f"{d['final_minus_peak']:+.3f} ± {d['paired_se']:.3f}", "yes" if d["within_one_se"] else "no",
                   f"{d['late_slope_per_100']:+.3f} ± {d['late_slope_se']:.3f} ({d['late_points']} points)", "yes" if d["late_decline"] else "no",
                   *([f"{d['validation_best_iteration']}: {d['validation_best_change_from_base']:+.3f}", f"{d['final_minus_validation_best']:+.3f} ± {d['validation_best_paired_se']:.3f}",
                      "yes" if d["within_one_se_of_validation_best"] else "no"] if d["validation_best_iteration"] is not None else ["-"] * 3)] for d in drifts]  # fmt: skip
    drift_headers = ["run", "peak at iteration", "peak change from base", "final change from base", "final - peak (paired s.e.)", "within one s.e.",
                     "second half's trend per 100 iterations (s.e.)", "declining (trend + 2 s.e. < 0)",
                     "best validation eval: iteration, held-out change", "final - it (paired s.e.)", "within one s.e. of it"]  # fmt: skip
    body.append("Drift: the last policy against the curve's peak\n\n" + with_json_lines(drift_headers, drift_rows, drifts))
    target = target if target is not None else 0.8 * min(peak_change(run) for run in runs)
    costs = [cost_to_target(run, target) for run in runs]
    cost_rows = [[c["run"], f"{c['cost_to_target']:.0f}" if c["cost_to_target"] is not None else "not reached",
                  f"{c['cost_to_target_without_audit']:.0f} ({c['cost_to_target'] / c['cost_to_target_without_audit'] - 1:+.1%})" if c["cost_to_target_without_audit"] else "-",
                  f"{c['total_cost']:.0f}", "; ".join(c["switches"]) or "-",
                  f"{c['share_at_or_above_floor']:.2f} (floor {c['floor']})" if c["share_at_or_above_floor"] is not None else "-"] for c in costs]  # fmt: skip
    cost_headers = ["run", f"modeled cost to {target:+.3f} accuracy", "the same without the controller (its audit's work left out; the controller's extra)",
                    "modeled cost of the run", "explore precision switches", "audited Spearman at or above the floor"]  # fmt: skip
    body.append("Modeled cost to a held-out target, and the explore controller\n\n" + with_json_lines(cost_headers, cost_rows, costs))
    return "\n\n".join(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=pathlib.Path, help="run directories written by `solrl train --out`")
    parser.add_argument("--target", type=float, help="accuracy change from the base whose modeled cost is compared (default: 80 %% of the smallest peak)")
    args = parser.parse_args()
    append_results("Learning curves of shapes runs", report(args.runs, args.target), NOTES)


if __name__ == "__main__":
    main()
