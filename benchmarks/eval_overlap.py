"""What periodic evals cost the pipeline: a shipped config (its pools, 48 x 96, its eval of 48
prompts x eval.n) run by the real scheduler on the virtual clock with stand-in workers, whole
(solrl.run.execute: base eval, periodic evals, final eval), at eval.every 0, 2 and 1. Prints the
modeled seconds of the whole run, the rollout pool's busy fraction, and what the periodic evals
add: seconds an iteration (the run's extra time over its iterations; the base and final evals are
the same in every arm) and that as a share of an iteration without them; then one JSON line per point.

A periodic eval is cut into slices that samplers take between pipeline tasks; its iteration's row
waits for the figures while exploring, regenerating and training go on. (Run it on an older
commit to price the eval as a barrier: the pools drained while it ran.)

    python benchmarks/eval_overlap.py [--config flux1] [--iterations 8] [--every 0 2 1]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile

from common import append_results, with_json_lines
from real_sizes import prompt_file
from virtual_runs import stand_in_config

from solrl.cluster.driver import Driver
from solrl.cluster.virtual import VirtualRuntime


def measure(name: str, every: int, iterations: int, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        prompts = prompt_file(pathlib.Path(tmp), "prompts.txt", 48)
        config = stand_in_config(name, prompts, iterations, f"cluster.stand_in={{model: {name}}}", f"eval.every={every}", f"eval.n={n}")
        runtime, at, rows = VirtualRuntime(), [], []

        def seen(_, row):
            at.append(runtime.now())
            rows.append(row)

        Driver(config, pathlib.Path(tmp) / "run", log=lambda _: None, runtime=runtime, on_iteration=seen).run()
    busy = statistics.fmean(v for r in rows for k, v in r["busy"].items() if k.startswith("rollout"))
    return {
        "config": name, "eval_every": every, "eval_images": 48 * n, "periodic_evals": sum("eval" in r for r in rows),
        "iterations": iterations, "rollout_busy": busy, "run_s": runtime.clock, "period_s": (at[-1] - at[0]) / (len(at) - 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="flux1")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--every", nargs="+", type=int, default=[0, 2, 1])
    parser.add_argument("--eval-n", type=int, default=4, help="eval images a prompt (the shipped eval.n)")
    args = parser.parse_args()
    points = [measure(args.config, every, args.iterations, args.eval_n) for every in args.every]
    without = next((p for p in points if p["eval_every"] == 0), None)
    for p in points:  # without evals the rows come evenly: their spacing is an iteration's time
        p["added_s_per_iteration"] = (p["run_s"] - without["run_s"]) / p["iterations"] if without else None
        p["eval_cost"] = p["added_s_per_iteration"] / without["period_s"] if without else None
    headers = ["config", "eval.every", "eval images", "periodic evals", "run (modeled s)", "rollout busy", "added s / iteration", "cost"]
    rows = [
        [p["config"], p["eval_every"], p["eval_images"], p["periodic_evals"], f"{p['run_s']:.0f}", f"{p['rollout_busy']:.3f}",
         *(("", "") if without is None else (f"{p['added_s_per_iteration']:.1f}", f"{100 * p['eval_cost']:+.1f} %"))]
        for p in points
    ]  # fmt: skip
    body = with_json_lines(headers, rows, points)
    notes = f"the shipped {args.config} pools at lag 1, stand-in stage tables on B200, {args.iterations} iterations on the virtual clock"
    append_results("Periodic evals among the pipeline's tasks (benchmarks/eval_overlap.py)", body, notes)


if __name__ == "__main__":
    main()
