"""The distributed shapes run's pipeline: synchronous (max_policy_lag 0) vs one version of lag.

For each setting, runs `--iterations` iterations on an embedded Ray cluster and reports, from
the run's metrics.jsonl, the mean rollout-worker busy ratio, per-stage seconds, end-to-end
iteration time, and weight-sync seconds and bytes. The first iteration (actor start-up) is
left out of the means.

    python benchmarks/pipeline.py [--iterations 6] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile

from common import append_results, table
from solrl.cluster import runtime
from solrl.cluster.driver import Driver
from solrl.config import load_config


def summarize(rows: list[dict]) -> dict:
    steady = rows[1:] or rows
    mean = lambda xs: statistics.fmean(xs) if xs else float("nan")  # noqa: E731
    rollout_busy = [v for r in steady for k, v in r["busy"].items() if k.startswith("rollout")]
    # With overlap an iteration's own span (start to trained) is longer than the time between
    # iterations finishing; the latter is the throughput.
    finish = [r["elapsed"] for r in rows]
    return {
        "wall_per_iteration_s": (finish[-1] - finish[0]) / (len(finish) - 1) if len(finish) > 1 else float("nan"),
        "iteration_s": mean([r["iteration_seconds"] for r in steady]),
        "rollout_busy": mean(rollout_busy),
        **{f"{stage}_s": mean([r["seconds"][stage] for r in steady]) for stage in ("explore", "regenerate", "learn", "sync")},
        "sync_bytes": mean([r["sync_bytes"] for r in steady]),
        "lag": max(r["policy_lag"] for r in steady),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], help="config overrides for both settings")
    args = parser.parse_args()
    rows = []
    for lag in (0, 1):
        config = load_config(overrides=[*args.set, f"train.iterations={args.iterations}", f"rollout.max_policy_lag={lag}", "eval.n=1"])
        started = runtime.start(config)
        try:
            with tempfile.TemporaryDirectory() as out:
                Driver(config, pathlib.Path(out), log=print).run()
                metrics = [json.loads(line) for line in (pathlib.Path(out) / "metrics.jsonl").read_text().splitlines()]
        finally:
            runtime.stop(started)
        s = summarize(metrics)
        rows.append([
            f"max_policy_lag={lag}", f"{s['wall_per_iteration_s']:.1f}", f"{s['iteration_s']:.1f}", f"{s['rollout_busy']:.2f}", f"{s['explore_s']:.1f}",
            f"{s['regenerate_s']:.1f}", f"{s['learn_s']:.1f}", f"{s['sync_s']:.3f}", f"{s['sync_bytes'] / 1e6:.2f}", s["lag"],
        ])
        print(rows[-1], flush=True)
    c = config.cluster
    append_results(
        f"Pipeline of the distributed shapes run, synchronous vs lag 1 ({args.iterations} iterations, first left out)",
        table(["setting", "wall s / iteration", "iteration span s", "rollout busy", "explore s", "regenerate s", "learn s", "weight sync s", "sync MB", "max lag"], rows),
        f"{c.rollout_workers} rollout, {c.regen_workers} regeneration workers, {c.learner_ranks} learner ranks; "
        "wall s / iteration: between consecutive iterations finishing (throughput); iteration span: one iteration's start to its "
        "trained weights; rollout busy: busy seconds over the time between rows; explore s runs from the iteration's start until its last group is explored, regenerate s from then until the last "
        "selection is rebuilt; with lag 1 the iteration's explore overlaps the previous learner step",
    )


if __name__ == "__main__":
    main()
