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
within one of them of the peak; a JSON line a run. (The peak is read off the held-out evals: a
diagnosis of drift, not a choice of what to report; train.keep_best chooses on validation prompts.)

Each run is labelled by how its config.yaml differs from the shipped configs/shapes.yaml.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import yaml
from common import append_results, table, with_json_lines

from solrl.config import load_config
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


def curve(run: pathlib.Path) -> list[list[object]]:
    """One row per eval point: iteration, seconds, held-out accuracy ± s.e., its paired change from the base,
    score, per task, then means over the iterations since the previous point: proxy reward, the learner's
    KL to the base model and gradient norm (before clipping), and the preview's Spearman against BF16."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    final = json.loads((run / "eval.json").read_text())
    points = [(0, 0.0, final["base_eval"])]
    points += [(r["iteration"] + 1, r["elapsed"], r["eval"]) for r in rows if "eval" in r]
    points.append((len(rows), final.get("seconds", rows[-1]["elapsed"]), final["final_eval"]))
    out, start, base = [], 0, final["base_eval"]
    for iteration, seconds, ev in points:
        window = rows[start:iteration]
        tasks = " ".join(f"{SHORT.get(k, k)} {v:.2f}" for k, v in ev["per_task"].items())
        change, se = accuracy_change(base, ev)
        out.append([iteration, f"{seconds:.0f}", f"{ev['accuracy']:.3f} ± {ev['accuracy_se']:.3f}", f"{change:+.3f} ± {se:.3f}", f"{ev['score']:.3f}", tasks]
                   + [_mean(window, key) for key in ("proxy_reward_mean", "kl", "grad_norm", "spearman")])
        start = iteration
    return out


def drift(run: pathlib.Path) -> dict:
    """The run's last policy (its lora/last/ when train.keep_best kept another) against its best eval point."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    report = json.loads((run / "eval.json").read_text())
    last = report.get("final_eval_last", report["final_eval"])
    points = [(r["iteration"] + 1, r["eval"]) for r in rows if "eval" in r] + [(len(rows), last)]
    peak_at, peak = max(points, key=lambda p: p[1]["accuracy"])
    change, se = accuracy_change(peak, last)
    base = report["base_eval"]
    return {
        "run": run.name, "peak_iteration": peak_at, "peak_change_from_base": accuracy_change(base, peak)[0],
        "final_change_from_base": accuracy_change(base, last)[0], "final_minus_peak": change, "paired_se": se, "within_one_se": bool(-change <= se),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=pathlib.Path, help="run directories written by `solrl train --out`")
    args = parser.parse_args()
    headers = ["iterations", "run s", "held-out accuracy (EMA)", "change from base (paired s.e.)", "score", "per task", "proxy mean", "KL to base", "grad norm", "preview Spearman"]
    body, drifts = [], [drift(run) for run in args.runs]
    for run in args.runs:
        body.append(f"{run.name}: {label(run)}\n\n" + table(headers, curve(run)))
    drift_rows = [[d["run"], d["peak_iteration"], f"{d['peak_change_from_base']:+.3f}", f"{d['final_change_from_base']:+.3f}",
                   f"{d['final_minus_peak']:+.3f} ± {d['paired_se']:.3f}", "yes" if d["within_one_se"] else "no"] for d in drifts]  # fmt: skip
    drift_headers = ["run", "peak at iteration", "peak change from base", "final change from base", "final - peak (paired s.e.)", "within one s.e."]
    body.append("Drift: the last policy against the curve's peak\n\n" + with_json_lines(drift_headers, drift_rows, drifts))
    append_results(
        "Learning curves of shapes runs",
        "\n\n".join(body),
        "held-out = 63 eval captions x 8, fp32 10 Euler steps, seed 1234, on the evaluation EMA (± the eval's standard error over "
        "its seeds; the change pairs the same captions and seeds with the base eval); the last row is the "
        "run's final eval; the last four columns are means over the iterations since the previous row: proxy = mean NVFP4 "
        "6-step reward of every explored candidate (train prompts, current policy), the learner's KL term "
        "mean((v_theta - v_ref)^2), its gradient norm before clipping, and the preview's Spearman against the BF16 reward; "
        "run s is wall time inside the run, so it depends on what else shared the machine",
    )


if __name__ == "__main__":
    main()
