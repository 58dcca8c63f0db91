"""The explore audit on the shapes run (`solrl train --local`, shapes.yaml, rollout.precision_control
at its defaults unless --set says otherwise): per iteration the precision explore ran at, the
Spearman of previews against BF16 on the selected seeds (what every run reports) and on the
audited random seeds (what the controller acts on), the cheaper rung's, the safer rung's paired gain
(while agreement is poor), and each move.

It answers two questions: how much best/worst selection inflates the selected seeds' figure (the
mean difference over iterations, with its standard error), and what the controller does with the
unbiased one on this model. Evals are cut to the base and final EMA on 2 seeds a caption (the
audit is the point); the modeled cost per iteration is solrl.cost's, audit included.

    python benchmarks/precision_audit.py [--iterations 16] [--seed 0] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile

from common import append_results, with_json_lines

from solrl.config import load_config, shipped_config
from solrl.local_run import LocalRun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = ["rollout.precision_control={}", "eval.n=2", "eval.best_of=0", "eval.grid_rows=0", f"seed={args.seed}", f"train.iterations={args.iterations}"]
    config = load_config(shipped_config("shapes"), [*overrides, *args.set])
    with tempfile.TemporaryDirectory() as out:
        LocalRun(config, pathlib.Path(out)).run()
        rows = [json.loads(line) for line in (pathlib.Path(out) / "metrics.jsonl").read_text().splitlines()]
    table_rows, points = [], []
    for r in rows:
        a = r["audit"]
        move = f"{a['switch']['from']} -> {a['switch']['to']}" if "switch" in a else ""
        point = {"iteration": r["iteration"] + 1, "precision": a["precision"], "spearman_selected": r["spearman"], "spearman_audited": a["spearman"]}
        point |= {"cheaper": a.get("cheaper"), "spearman_cheaper": a.get("cheaper_spearman"), "safer": a.get("safer"), "safer_gains": a.get("safer_gains")}
        point |= {"move": move or None, "modeled_cost": sum(r["modeled_cost"].values())}
        points.append(point)
        gain = f"{statistics.fmean(a['safer_gains']):+.3f} ({a['safer']})" if a.get("safer_gains") else "-"
        table_rows.append([point["iteration"], a["precision"], f"{r['spearman']:.3f}", f"{a['spearman']:.3f}", a.get("cheaper", "-"), _f(a.get("cheaper_spearman")), gain, move, f"{point['modeled_cost']:.0f}"])
    gaps = [p["spearman_selected"] - p["spearman_audited"] for p in points if _finite(p["spearman_selected"]) and _finite(p["spearman_audited"])]
    se = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else float("nan")
    headers = ["iteration", "explore precision", "Spearman, selected seeds", "Spearman, audited seeds", "cheaper rung", "its Spearman", "safer rung's gain", "move", "modeled cost"]
    c = config.rollout.precision_control
    body = with_json_lines(headers, table_rows, points, digits=4)
    body += (
        f"\n\nSelected minus audited Spearman, mean over {len(gaps)} iterations: {statistics.fmean(gaps):+.3f} ± {se:.3f} (s.e.). "
        f"Controller: ladder {c.ladder}, floor {c.floor}, patience {c.patience}, recover {c.recover}, recover_patience {c.recover_patience}, gain {c.gain}, audit {c.audit} seeds a group."
    )
    append_results(f"Explore audit on the shapes run ({args.iterations} iterations, seed {args.seed})", body)


def _finite(x) -> bool:
    return x is not None and x == x


def _f(x) -> str:
    return f"{x:.3f}" if _finite(x) else "-"


if __name__ == "__main__":
    main()
