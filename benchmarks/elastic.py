"""Elastic rollout pool: resized during one distributed shapes run through its control service,
as `solrl scale` does (1 -> 2 -> 1 workers by default).

For each phase it reports iterations, the mean iteration time and candidates per second (both
from the run's metrics.jsonl, the first iteration of the run, actor start-up, left out), and
for each grow the time from the Scale call to the new worker's first task. With --autoscale
MIN,MAX it runs once more under cluster.autoscale instead and reports the pool size and busy
ratios per iteration and each decision the policy made.

    python benchmarks/elastic.py [--sizes 1,2,1] [--iterations-per-phase 4] [--autoscale 1,3] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import threading
import time

from common import append_results, table

from solrl.cluster import runtime
from solrl.cluster.control import ControlClient
from solrl.cluster.driver import Driver
from solrl.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,1", help="rollout pool size in each phase")
    parser.add_argument("--iterations-per-phase", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], help="config overrides")
    parser.add_argument("--autoscale", help="MIN,MAX: also a run whose rollout pool the policy sizes")
    args = parser.parse_args()
    if args.autoscale:
        autoscaled(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    per = args.iterations_per_phase
    config = load_config(
        overrides=[
            "eval.n=1",
            "eval.grid_rows=0",
            *args.set,
            f"cluster.rollout_workers={sizes[0]}",
            f"train.iterations={per * len(sizes)}",
        ]
    )
    calls: list[tuple[int, float, set[str]]] = []  # (new size, when Scale was called, workers before)
    seen: dict = {}
    # the embedded cluster is sized for the config it starts with: give it room for the largest pool
    room = load_config(overrides=[*args.set, f"cluster.rollout_workers={max(sizes)}"])

    def scale_between_phases(driver: Driver, row: dict) -> None:
        seen["rollout"] = driver.pools["rollout"]
        phase = (row["iteration"] + 1) // per
        if (row["iteration"] + 1) % per or phase >= len(sizes) or sizes[phase] == sizes[phase - 1]:
            return
        before = {name for name, w in driver.pools["rollout"].workers.items() if not w.spare}  # a spare taken counts as new
        address = driver.session.control_server.address

        def call() -> None:  # the driver's own thread answers the control service, so call from another
            calls.append((sizes[phase], time.perf_counter(), before))
            ControlClient(address).scale("rollout", sizes[phase])

        threading.Thread(target=call).start()

    started = runtime.start(room)
    try:
        with tempfile.TemporaryDirectory() as out:
            Driver(config, pathlib.Path(out), log=print, on_iteration=scale_between_phases).run()
            rows = [json.loads(line) for line in (pathlib.Path(out) / "metrics.jsonl").read_text().splitlines()]
    finally:
        runtime.stop(started)
    body_rows = []
    for phase, size in enumerate(sizes):
        mine = [r for r in rows[phase * per : (phase + 1) * per] if r["iteration"] > 0]
        # the phase's first iteration may straddle the resize; its rows report the sizes served
        served = sorted({r["workers"]["rollout"] for r in mine})
        wall = [r["iteration_seconds"] for r in mine]
        rate = sum(r["candidates"] for r in mine) / sum(r["seconds"]["explore"] for r in mine)
        body_rows.append([phase + 1, size, served, len(mine), f"{statistics.fmean(wall):.1f}", f"{rate:.1f}"])
    latencies = []
    for size, called, before in calls:
        new = [w for w in seen["rollout"].history if w.name not in before and w.first_task_at]
        if new:
            first = min(new, key=lambda w: w.first_task_at)
            took = {k: round(v, 2) for k, v in first.took.items()}  # its start-up stages (solrl.cluster.startup.advance)
            latencies.append({"to": size, "scale_to_first_task_s": round(first.first_task_at - called, 2), "spares": config.cluster.spare_rollout_workers, "stages_s": took})
    body = table(["phase", "rollout workers", "sizes seen in rows", "iterations", "mean iteration s", "candidates/s (explore)"], body_rows)
    said = ", ".join(f"to {p['to']}: {p['scale_to_first_task_s']:.1f} s ({_stages(p['stages_s'])})" for p in latencies) or "no grow"
    body += f"\n\nScale call to the new worker's first task: {said}\n\n" + "\n".join(json.dumps(p) for p in latencies)
    spares = f", {config.cluster.spare_rollout_workers} spare rollout worker(s)" if config.cluster.spare_rollout_workers else ""
    append_results(f"Elastic rollout pool {args.sizes} ({per} iterations a phase{spares})", body)


def _stages(took: dict[str, float]) -> str:
    return "; ".join(f"{k} {v:.1f} s" for k, v in took.items()) or "a spare, started before"


def autoscaled(args: argparse.Namespace) -> None:
    lo, hi = (int(x) for x in args.autoscale.split(","))
    iterations = args.iterations_per_phase * 3
    config = load_config(
        overrides=["eval.n=1", "eval.grid_rows=0", *args.set, f"cluster.rollout_workers={lo}", f"cluster.autoscale={{rollout: {{min: {lo}, max: {hi}}}}}", f"train.iterations={iterations}"]
    )
    started = runtime.start(config)
    try:
        with tempfile.TemporaryDirectory() as out:
            Driver(config, pathlib.Path(out), log=print).run()
            rows = [json.loads(line) for line in (pathlib.Path(out) / "metrics.jsonl").read_text().splitlines()]
    finally:
        runtime.stop(started)
    mean = lambda r, prefix: statistics.fmean([v for k, v in r["busy"].items() if k.startswith(prefix)] or [float("nan")])
    body_rows = [
        [r["iteration"], r["workers"]["rollout"], f"{mean(r, 'rollout-'):.2f}", f"{mean(r, 'regen-'):.2f}", f"{r['iteration_seconds']:.1f}", r.get("autoscale", {}).get("rollout", "")]
        for r in rows
    ]
    body = table(["iteration", "rollout workers", "rollout busy", "regen busy", "iteration s", "decision"], body_rows)
    append_results(f"Autoscaled rollout pool [{lo}, {hi}] ({iterations} iterations)", body)


if __name__ == "__main__":
    main()
